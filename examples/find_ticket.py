"""Find a lottery ticket: the `tf-unilth find-ticket` command (see its --helpfull).

    python examples/find_ticket.py --method=unilth --target_sparsity=0.9 \
        --output_dir=runs/unilth
"""

from tf_unilth.cli import find_ticket

if __name__ == "__main__":
    find_ticket.run()
