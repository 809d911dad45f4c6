"""`python -m reenact.tritonserve --model-repository DIR --grpc-port P`: tritonserver in the foreground."""

import sys

from reenact.tritonserve.server import main

sys.exit(main())
