import sys

from depthlib.cli import main

sys.exit(main())
