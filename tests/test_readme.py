"""The README a newcomer starts from: the two commands first, and every environment variable
the app and its scripts read documented in its one Configuration table."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _configuration_table() -> str:
    return README.split("## Configuration\n", 1)[1].split("\n## ", 1)[0]


def _variables_read() -> set[str]:
    names = set()
    for path in [*(ROOT / "app").rglob("*.py"), ROOT / "wsgi.py", ROOT / "tests" / "conftest.py"]:
        text = path.read_text()
        # os.environ (the config's `env`), not a request's WSGI environ.
        names |= set(re.findall(r'(?:os\.environ|\benv)\.get\(\s*"([A-Z][A-Z0-9_]+)"', text))
        names |= set(re.findall(r'getenv\(\s*"([A-Z][A-Z0-9_]+)"', text))
        names |= set(re.findall(r'_require_env\("([A-Z_]+)"\)', text))
    # The tuning read only when set.
    names |= set(re.findall(r'\("([A-Z][A-Z0-9_]+)", (?:int|float|str)\)',
                            (ROOT / "app" / "config.py").read_text()))
    for path in (ROOT / "scripts").glob("*.sh"):
        names |= set(re.findall(r'\$\{([A-Z][A-Z0-9_]+):-', path.read_text()))
    return names


def test_the_readme_starts_with_make_run_and_make_test():
    first_block = README.split("```", 2)[1]
    assert [line.split()[:2] for line in first_block.strip().splitlines()[1:]] == [
        ["make", "run"], ["make", "test"]]


def test_every_environment_variable_read_is_in_the_configuration_table():
    table = _configuration_table()
    read = _variables_read()
    assert {"DATABASE_URL", "REDIS_URL", "SMTP_PORT", "PORT", "REDIS_PORT", "APP_ENV",
            "OUTBOX_BATCH_ITEMS", "MAIL_SINK_LOG", "CLEARDESK_TEST_DB"} <= read
    missing = sorted(name for name in read
                     if f"`{name}`" not in table and not name.startswith("BENCH_"))
    assert missing == []


def test_commands_use_the_virtualenvs_flask():
    bare = [line for line in README.splitlines()
            if re.search(r"(?<![/\w-])flask --app", line)]
    assert bare == []
    assert ".venv/bin/flask --app wsgi mail last-link" in README
