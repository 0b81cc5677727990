# One fixture module serves every test in the repository: real Redis, in-process app
# clients, and the whole stack for end-to-end tests.
pytest_plugins = ["avatar_devstack.testing"]
