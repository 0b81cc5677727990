"""Every setting is documented, in `.env.example` and in README's table, exactly as the
settings classes define it (regenerate both with `make config-docs`)."""

from avatar_devstack.config_docs import collect, env_example, readme_with_table
from avatar_devstack.environment import REPO_ROOT


def test_env_example_matches_the_settings_classes():
    assert (REPO_ROOT / ".env.example").read_text() == env_example(collect())


def test_readme_table_matches_the_settings_classes():
    readme = (REPO_ROOT / "README.md").read_text()
    assert readme == readme_with_table(readme, collect())


def test_every_variable_has_a_meaning():
    assert [v.name for v in collect() if not v.meaning] == []
