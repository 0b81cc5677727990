"""Every setting is documented, in `.env.example` and in `docs/configuration.md`, exactly as
the settings classes define it (regenerate both with `make config-docs`)."""

from avatar_devstack.config_docs import CONFIGURATION_PAGE, collect, configuration_page, env_example
from avatar_devstack.environment import REPO_ROOT


def test_env_example_matches_the_settings_classes():
    assert (REPO_ROOT / ".env.example").read_text() == env_example(collect())


def test_configuration_page_matches_the_settings_classes():
    assert CONFIGURATION_PAGE.read_text() == configuration_page(collect())


def test_every_variable_has_a_meaning():
    assert [v.name for v in collect() if not v.meaning] == []
