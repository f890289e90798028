"""gunicorn settings for production (``gunicorn -c gunicorn.conf.py``; see README, Deploying).

Every value can be overridden on the command line or through GUNICORN_CMD_ARGS. The web
workers keep no state that matters (sessions are signed cookies; idempotency keys, the
signature throttle and the outbox live in the database), so a worker may be killed at any
moment and several servers may share one PostgreSQL database.
"""

import multiprocessing
import os

wsgi_app = "randomizer:create_app()"
bind = os.environ.get("RANDOMIZER_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("RANDOMIZER_WORKERS", min(2 * multiprocessing.cpu_count() + 1, 8)))
worker_class = "sync"
# A request is bounded by its database work (connect and lock timeouts are a few seconds);
# a worker stuck for longer than this is killed and replaced.
timeout = 30
graceful_timeout = 20
keepalive = 5
# Recycle workers now and then so that no slow leak accumulates.
max_requests = 2000
max_requests_jitter = 200
# Request limits: the app answers 413 above MAX_CONTENT_LENGTH; gunicorn refuses longer
# request lines (414) and header fields before the app sees them.
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
# The TLS-terminating reverse proxy on this host says whether the client used HTTPS.
forwarded_allow_ips = os.environ.get("RANDOMIZER_PROXY_IPS", "127.0.0.1")
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}
accesslog = "-"
errorlog = "-"
# Each worker loads the instance keys itself (nothing secret is inherited from a master
# process that outlives key rotation).
preload_app = False
