"""`python -m evalkit ...`, also under torchrun / accelerate launch."""

from evalkit.cli.main import main

main()
