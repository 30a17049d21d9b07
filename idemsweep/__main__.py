import sys

from idemsweep.cli import main

sys.exit(main())
