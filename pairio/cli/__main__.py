"""``python -m pairio.cli``: the same as the ``pairio`` command."""

from . import main

main(prog_name="pairio")
