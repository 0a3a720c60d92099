"""Earlier versions' module of `find_ticket` (now `tf_unilth.finder`)."""

from tf_unilth.finder import TicketResult, find_ticket, finish, ticket_sparsity  # noqa: F401
