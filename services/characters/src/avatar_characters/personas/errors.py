"""The errors of user personas, each with the status and code of the envelope."""

from avatar_characters.errors import QuotaExceeded
from avatar_shared.errors import NamedNotFound, NotFound


# Another caller's persona is not found either: persona ids are not confirmed to strangers.
class PersonaNotFound(NamedNotFound):
    code, what, hint = "persona_not_found", "Persona", " among yours (see GET /api/personas)"


class NoDefaultPersona(NotFound):
    code = "no_default_persona"
    message = "You have no default persona (mark one with is_default, see PUT /api/personas/{id})."


class PersonaQuotaExceeded(QuotaExceeded):
    message = "You keep as many personas (or bytes of them) as one user may; delete one first."
