"""Every error of the auth service, each with the status and code of the envelope.

None of its own yet: until the auth issue builds sign-in, each endpoint answers the shared
501 `not_implemented`.
"""
