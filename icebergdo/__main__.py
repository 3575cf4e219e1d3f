import sys

from icebergdo.cli import main

sys.exit(main())
