import sys

from autolora.cli import main

sys.exit(main())
