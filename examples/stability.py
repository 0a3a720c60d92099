"""Seed 001's rewinding sweep (stability of tickets): `tf_unilth.cli.stability`
(see its --helpfull).

    python examples/stability.py --output_dir=runs/stability --data_dir=$TFDS_DATA_DIR
"""

from tf_unilth.cli import stability

if __name__ == "__main__":
    stability.run()
