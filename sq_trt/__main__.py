import sys

from sq_trt.cli import main

sys.exit(main())
