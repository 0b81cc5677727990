"""`make deploy-secrets` makes every key file a deployment mounts, once, and each service
reads its keys from those files as /run/secrets/<name>: no key in any environment."""

from avatar_auth.settings import AuthSettings
from avatar_chat.settings import ChatSettings
from avatar_devstack.deploy_secrets import MAKERS, make_deploy_secrets
from avatar_shared.tokens import read_key_set


def test_it_makes_each_key_file_once(tmp_path):
    folder = tmp_path / "secrets"
    assert sorted(make_deploy_secrets(folder)) == sorted(MAKERS)
    before = {path.name: path.read_text() for path in folder.iterdir()}
    assert make_deploy_secrets(folder) == []  # a second run keeps every key
    assert {path.name: path.read_text() for path in folder.iterdir()} == before
    assert folder.stat().st_mode & 0o077 == 0  # the folder is its owner's only
    assert len(before["anon_id_secret"]) >= 32
    assert read_key_set(folder / "auth_signing_keys").keys  # a private key set auth can use


def test_services_read_their_keys_from_the_files(tmp_path, monkeypatch):
    folder = tmp_path / "secrets"
    make_deploy_secrets(folder)
    for name in ("ANON_ID_SECRET", "GOOGLE_CLIENT_SECRET", "VLLM_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    (folder / "vllm_api_key").write_text("token-for-vllm")
    chat = ChatSettings(_secrets_dir=folder)
    assert chat.anon_id_secret.get_secret_value() == (folder / "anon_id_secret").read_text()
    assert chat.vllm_api_key == "token-for-vllm"
    auth = AuthSettings(_secrets_dir=folder, signing_keys_file=str(folder / "auth_signing_keys"))
    secret = (folder / "google_client_secret").read_text()
    assert auth.google_client_secret.get_secret_value() == secret


def test_an_empty_variable_hides_no_key_file(tmp_path, monkeypatch):
    """`ANON_ID_SECRET=` copied from .env.example must not shadow the mounted key."""
    folder = tmp_path / "secrets"
    make_deploy_secrets(folder)
    monkeypatch.setenv("ANON_ID_SECRET", "")
    chat = ChatSettings(_secrets_dir=folder)
    assert chat.anon_id_secret.get_secret_value() == (folder / "anon_id_secret").read_text()
