"""Storage URLs: the password never printed or recorded, and still reaching the trial process."""
from __future__ import annotations

from harness.optuna_parts import PASSWORD_ENV, mask_url, strip_password, with_password

PG = "postgresql+psycopg://alice:s3cr%40t@db.example:5432/harness"


def test_mask_url_hides_only_the_password():
    assert mask_url(PG) == "postgresql+psycopg://alice:***@db.example:5432/harness"
    for url in ("sqlite:///runs/x/study.db", "journal://runs/x/journal.log", "postgresql://alice@db/h"):
        assert mask_url(url) == url


def test_the_password_leaves_the_url_and_comes_back_from_the_environment(monkeypatch):
    bare, password = strip_password(PG)
    assert bare == "postgresql+psycopg://alice@db.example:5432/harness" and password == "s3cr@t"
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    assert with_password(bare) == bare  # nothing to add: libpq's own PGPASSWORD/.pgpass still apply
    monkeypatch.setenv(PASSWORD_ENV, password)
    assert with_password(bare) == PG
    assert with_password(PG.replace("s3cr%40t", "other")) == PG.replace("s3cr%40t", "other")  # the URL's own wins
    assert strip_password("sqlite:///a.db") == ("sqlite:///a.db", None)
