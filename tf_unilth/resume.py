"""Earlier versions' module of the resumable state (now `tf_unilth.engine.journal`)."""

from tf_unilth.engine.journal import (PROGRESS_FILE, WORKER_TEMP_PREFIX, History,  # noqa: F401
                                      Journal, SaveProgress, callback_state,
                                      set_callback_state)

RunState = Journal  # the earlier name
