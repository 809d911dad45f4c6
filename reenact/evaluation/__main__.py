import sys

from reenact.evaluation.cli import main

sys.exit(main())
