"""Words for the status and role values that refusals quote.

``Text`` shows an enum value as the translation of ``value.replace("_", " ")``; the kit
and shipment statuses and the list kinds are marked where their pages label them, the
participant statuses and roles here, so that extraction finds every one.
"""

from randomizer.wording import N_

PARTICIPANT_STATUS_WORDS = (
    N_("eligible"), N_("screen failed"), N_("randomized"), N_("withdrawn"),
    N_("randomized in error"),
)  # fmt: skip
ROLE_WORDS = (
    N_("admin"), N_("statistician"), N_("pharmacist"), N_("investigator"), N_("assessor"),
)  # fmt: skip
