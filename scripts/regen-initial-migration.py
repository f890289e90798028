#!/usr/bin/env python3
"""Regenerate migration 0001 from the models (only while no deployed database exists).

Until the first release every schema change folds into the initial revision. The audit
trail's append-only triggers are kept from the current file. Run from the repo root:

    .venv/bin/python scripts/regen-initial-migration.py
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from alembic import command

from randomizer import create_app, migrate
from randomizer.db import db

VERSIONS = Path("randomizer/migrations/versions")
TARGET = VERSIONS / "0001_initial_schema.py"


def main() -> None:
    old = TARGET.read_text(encoding="utf-8")
    start = old.index("def _protect_audit_trail")
    # Everything from the trigger helpers up to downgrade() is kept verbatim.
    protect = old[start : old.index("def downgrade", start)]
    with tempfile.TemporaryDirectory() as tmp:
        shutil.move(str(TARGET), Path(tmp) / TARGET.name)
        try:
            os.environ["RANDOMIZER_INSTANCE_PATH"] = tmp
            os.environ.pop("RANDOMIZER_DATABASE_URL", None)
            app = create_app(require_keys=False)
            with app.app_context():
                cfg = migrate.alembic_config(db.engine)
                with db.engine.begin() as conn:
                    cfg.attributes["connection"] = conn
                    command.revision(
                        cfg, message="initial schema", autogenerate=True, rev_id="0001"
                    )
        except BaseException:
            shutil.move(str(Path(tmp) / TARGET.name), TARGET)
            raise
    made = next(VERSIONS.glob("0001_*.py"))
    text = made.read_text(encoding="utf-8")
    made.unlink()
    text = text.replace("randomizer.db.UTCDateTime(timezone=True)", "sa.DateTime(timezone=True)")
    text = re.sub(r"^import randomizer.*\n", "", text, flags=re.M)
    text = text.replace(
        "    # ### end Alembic commands ###\n",
        "    # ### end Alembic commands ###\n    _protect_audit_trail()\n",
        1,
    )
    text = text.replace(
        "def downgrade() -> None:\n",
        protect + "def downgrade() -> None:\n    _unprotect_audit_trail()\n",
    )
    TARGET.write_text(text, encoding="utf-8")
    print(f"rewrote {TARGET}")


if __name__ == "__main__":
    main()
