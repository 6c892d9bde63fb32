"""Flower's configuration: Flower reads ``flowerconfig.py`` from its working directory.

Flower's UI lists every job and can revoke jobs and shut workers down, so it is served on an
address other than loopback only behind basic auth: ``FLOWER_BASIC_AUTH=user:password``
(Flower reads the variable itself; comma-separated for several users)."""

import os
import sys

_address = next((arg.split("=", 1)[1] for arg in sys.argv if arg.startswith("--address=")), "")
if not os.environ.get("FLOWER_BASIC_AUTH") and _address not in ("127.0.0.1", "localhost", "::1"):
    sys.exit(f"flower: refusing to serve on {_address or 'every interface'} without FLOWER_BASIC_AUTH=user:password "
             "(or bind it to 127.0.0.1)")
