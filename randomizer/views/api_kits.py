"""``GET /api/v1/studies/{study}/kits?site=CODE``: the kit list.

Pharmacists get their own sites' kits with each kit's product (audited as a disclosure);
another site answers 404 exactly as a site that does not exist. Admins get codes and
statuses only. Every other role is refused.
"""

from __future__ import annotations

import datetime as dt

from flask import Response, jsonify

from randomizer.auth import current, current_actor
from randomizer.db import db
from randomizer.errors import N_, NotFound
from randomizer.models import Role, Study
from randomizer.services import pharmacy
from randomizer.services.blinded_kits import blinded_kits
from randomizer.services.studies import get_study
from randomizer.views.api import bp
from randomizer.views.api_schema import operation, query_of, reply
from randomizer.views.api_shapes import Arm, KitEntry, KitList, KitQuery


def _kit(
    code: str, status: str, site: str | None, lot: str | None, expiry: dt.date | None,
    is_test: bool,
) -> KitEntry:  # fmt: skip
    return KitEntry(kit_code=code, status=status, site=site, lot=lot, expiry=expiry, test=is_test)


def _sites(study: Study, wanted: str | None, allowed: set[str]) -> list[str]:
    if wanted is None:
        return sorted(allowed)
    if wanted not in allowed:
        raise NotFound(
            N_("No site '%(wanted)s' of yours in study %(study)s."),
            field="site",
            wanted=wanted,
            study=study.code,
        )
    return [wanted]


@bp.get("/studies/<study_code>/kits")
@operation("Kit list of a site", roles=(Role.PHARMACIST, Role.ADMIN), query=KitQuery,
           answer=KitList, notes="pharmacists their own sites', with products")  # fmt: skip
def study_kits(study_code: str) -> Response:
    session, user = db.session(), current()
    study = get_study(session, study_code)
    study_sites = {s.code for s in study.sites}
    wanted = query_of(KitQuery).site
    kits: list[KitEntry] = []
    if user.role is Role.PHARMACIST:
        sites = _sites(study, wanted, study_sites & user.site_codes)
        found = pharmacy.inventory(session, study, sites=sites, actor=current_actor(), view="api")
        session.commit()
        for k in found:
            kit = _kit(k.code, k.status.value, k.site, k.lot, k.expiry, k.is_test)
            kit.arm = Arm(code=k.product.code, name=k.product.name)
            kits.append(kit)
    else:
        sites = _sites(study, wanted, study_sites)
        rows = blinded_kits(session, study, sites=sites if wanted else None)
        kits = [_kit(k.code, k.status, k.site_code, k.lot, k.expiry, k.is_test) for k in rows]
    return jsonify(reply(KitList(study=study.code, site=wanted, count=len(kits), kits=kits)))
