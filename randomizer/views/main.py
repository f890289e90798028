"""Home page per role."""

from __future__ import annotations

from flask import Blueprint, render_template
from sqlalchemy import select

from randomizer.auth import current, login_required
from randomizer.db import db
from randomizer.models import Study

bp = Blueprint("main", __name__)


@bp.get("/")
@login_required
def home() -> str:
    studies = db.session.scalars(select(Study).order_by(Study.code)).all()
    return render_template("home.html", user=current(), studies=studies)
