"""Every error of the gen3d service, each with the status and code of the envelope.

None of its own yet: until the gen3d issue builds the jobs, each endpoint answers the shared
501 `not_implemented`.
"""
