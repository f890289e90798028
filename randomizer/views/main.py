"""Home page per role: who you are, what your role may do, and the loaded studies."""

from __future__ import annotations

from flask import Blueprint, render_template, url_for
from sqlalchemy import select

from randomizer.auth import current, login_required
from randomizer.db import db
from randomizer.models import Study
from randomizer.services.dashboards import dashboards
from randomizer.views.navigation import ENTRIES

bp = Blueprint("main", __name__)


@bp.get("/")
@login_required
def home() -> str:
    user = current()
    actions = [
        {"url": url_for(e.endpoint), "label": e.label, "description": e.description}
        for e in ENTRIES
        if user.role in e.roles
    ]
    studies = db.session.scalars(select(Study).order_by(Study.code)).all()
    return render_template(
        "home.html", user=user, studies=studies, actions=actions,
        boards=dashboards(db.session(), user),
    )  # fmt: skip
