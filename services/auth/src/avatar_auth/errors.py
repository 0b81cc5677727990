"""Every error of the auth service, each with the status and code of the envelope.

Failures of a sign-in that came back from the provider are not envelopes: the browser is on a
navigation, so the callback redirects to `{FRONTEND_URL}/auth/callback?error=<code>` with one
of `SIGN_IN_FAILURES` instead.
"""

from avatar_shared.errors import ServiceUnavailable, Unauthorized, ValidationFailed

# Why a sign-in failed, as the frontend's callback page gets it (`?error=<code>`), besides
# the provider's own OAuth error codes (e.g. `access_denied`), which are passed on.
SIGN_IN_FAILURES = {
    "state_mismatch": "the callback's state is unknown, expired, used, or from another browser",
    "token_exchange_failed": "the provider refused to exchange the code",
    "invalid_id_token": "the ID token failed verification (signature, issuer, audience, nonce)",
    "email_not_verified": "the provider has not verified the account's email",
    "provider_unavailable": "the provider could not be reached",
    "provider_error": "the provider answered with an error code we do not pass on",
}


class SignInDisabled(ServiceUnavailable):
    code = "sign_in_disabled"
    message = "Sign-in is not configured on this server (GOOGLE_CLIENT_ID is empty)."


class ProviderUnavailable(ServiceUnavailable):
    code, message = "provider_unavailable", "The sign-in provider is unreachable; try again."


class InvalidNext(ValidationFailed):
    code = "invalid_next"
    message = "next must be a path on the frontend's own site, such as /chat."


class NotSignedIn(Unauthorized):
    code, message = "not_signed_in", "Not signed in."
