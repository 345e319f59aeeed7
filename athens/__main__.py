import sys

from athens.cli import main

sys.exit(main())
