"""randomizer: randomization and blinding service for blinded clinical trials."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Flask


def create_app(test_config: dict[str, Any] | None = None, *, require_keys: bool = True) -> Flask:
    """Build the app: defaults, then ``instance/config.py``, then ``RANDOMIZER_*`` variables.

    Outside testing the app refuses to start without its session secret and master key;
    ``require_keys=False`` is only for ``randomizer init``/``demo``, which create them.
    """
    from randomizer import settings

    instance_path = Path(
        os.environ.get("RANDOMIZER_INSTANCE_PATH") or Path.cwd() / "instance"
    ).resolve()
    app = Flask(__name__, instance_path=str(instance_path), instance_relative_config=True)
    settings.configure(app, test_config)
    settings.load_instance_secrets(app, required=require_keys)
    settings.init_extensions(app)
    settings.register_blueprints(app)
    return app
