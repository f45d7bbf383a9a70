"""The closed set of language ids: aliases, folding, paths and the resolve rule."""

from __future__ import annotations

import pytest

from core.languages import (
    LANGUAGES,
    OTHER,
    UNKNOWN,
    language_from_path,
    normalise_language,
    resolve_language,
)
from simulator.feedback_text import LANGUAGE_NAMES
from simulator.synthetic import LANGUAGES as SIMULATED_LANGUAGES

REQUIRED = {
    "python", "typescript", "javascript", "java", "go", "rust", "cpp", "c", "csharp", "kotlin",
    "ruby", "php", "swift", "scala", "shell", "sql", "lua", "html", "css", "json", "yaml",
    "markdown", "dart", "r", "haskell", "elixir", "clojure", "ocaml", "perl", "julia", "zig",
    "vue", "svelte",
}  # fmt: skip


def test_the_set_holds_every_targeted_language_and_no_special_value() -> None:
    assert REQUIRED <= LANGUAGES
    assert UNKNOWN not in LANGUAGES and OTHER not in LANGUAGES


def test_the_ids_the_simulator_and_experiments_store_are_ids_unchanged() -> None:
    # Renaming one would split a language's history at the deploy.
    for language in {*LANGUAGE_NAMES, *SIMULATED_LANGUAGES, "c"}:
        assert normalise_language(language) == language


def test_every_id_is_plain_lower_case_ascii() -> None:
    for language in LANGUAGES:
        assert language.isascii() and language.isalpha() and language.islower(), language


@pytest.mark.parametrize(
    ("value", "language"),
    [
        ("py", "python"),
        ("python3", "python"),
        ("ts", "typescript"),
        ("typescriptreact", "typescript"),
        ("TypeScript JSX", "typescript"),
        ("javascriptreact", "javascript"),
        ("jsx", "javascript"),
        ("node", "javascript"),
        ("ECMAScript 6", "javascript"),
        ("c++", "cpp"),
        ("cxx", "cpp"),
        ("C#", "csharp"),
        ("cs", "csharp"),
        ("golang", "go"),
        ("shellscript", "shell"),
        ("Shell Script", "shell"),
        ("bash", "shell"),
        ("sh", "shell"),
        ("zsh", "shell"),
        ("objective-c", "objectivec"),
        ("ObjectiveC", "objectivec"),
        ("yml", "yaml"),
        ("jsonc", "json"),
        ("scss", "css"),
        ("kts", "kotlin"),
        ("JAVA", "java"),
        ("Perl5", "perl"),
    ],
)
def test_aliases_fold_onto_their_id(value: str, language: str) -> None:
    assert normalise_language(value) == language


@pytest.mark.parametrize(
    ("value", "language"),
    [
        ("Python", "python"),
        ("  python\n", "python"),
        ("\tRust ", "rust"),
        ("typescript    jsx", "typescript"),
        ("shell\tscript", "shell"),
        ("python" + " " * 40, "python"),
    ],
)
def test_case_and_ascii_whitespace_do_not_matter(value: str, language: str) -> None:
    assert normalise_language(value) == language


@pytest.mark.parametrize("value", [None, "", "   ", "\t\n", "unknown", " Unknown "])
def test_nothing_said_is_unknown(value: str | None) -> None:
    assert normalise_language(value) == UNKNOWN


@pytest.mark.parametrize(
    "value",
    [
        "0",
        "if",
        "__main__",
        "plaintext",
        "elm",
        "\x00",
        "py\x00",
        "\x1fpython",  # a separator str.strip() would drop
        "python\u00a0",  # no-break space: not folded
        "pyth on",
        "\ud800",
        "ｐｙｔｈｏｎ",  # full-width letters
        "x" * 10_000,
        "other",
    ],
)
def test_anything_else_is_other(value: str) -> None:
    assert normalise_language(value) == OTHER


def test_normalising_twice_changes_nothing() -> None:
    for value in [*LANGUAGES, UNKNOWN, OTHER, "py", "__main__", ""]:
        once = normalise_language(value)
        assert normalise_language(once) == once


@pytest.mark.parametrize(
    ("path", "language"),
    [
        ("src/app/main.py", "python"),
        ("/usr/lib/python3/typing.pyi", "python"),
        ("web/App.tsx", "typescript"),
        ("lib/index.mjs", "javascript"),
        ("lib/index.cjs", "javascript"),
        ("include/stdio.h", "c"),
        ("include/vector.hpp", "cpp"),
        ("src/a.hh", "cpp"),
        ("src/a.cc", "cpp"),
        ("src/a.cxx", "cpp"),
        ("build.gradle.kts", "kotlin"),
        ("app/models/user.rb", "ruby"),
        ("scripts/setup.sh", "shell"),
        ("scripts/setup.bash", "shell"),
        ("types/index.d.ts", "typescript"),
        ("MAIN.PY", "python"),
        ("analysis.R", "r"),
        ("Dockerfile", "dockerfile"),
        ("deploy/Makefile", "makefile"),
        ("Gemfile", "ruby"),
        ("Jenkinsfile", "groovy"),
    ],
)
def test_posix_paths_tell_the_language_by_extension_or_name(path: str, language: str) -> None:
    assert language_from_path(path) == language


@pytest.mark.parametrize(
    ("path", "language"),
    [
        ("C:\\Users\\dev\\src\\main.rs", "rust"),
        ("C:\\Users\\dev\\App.CS", "csharp"),
        ("src\\lib/mixed.go", "go"),
        ("\\\\server\\share\\Program.java", "java"),
        ("C:\\Users\\dev\\Makefile", "makefile"),
    ],
)
def test_windows_paths(path: str, language: str) -> None:
    assert language_from_path(path) == language


@pytest.mark.parametrize(
    ("uri", "language"),
    [
        ("file:///home/dev/project/main.py", "python"),
        ("file:///c%3A/Users/dev/App.tsx", "typescript"),
        ("file:///C:/Users/dev/App.kt", "kotlin"),
        ("file:///home/dev/my%20project/server.go", "go"),
        ("file:///home/dev/main.py?version=3", "python"),
        ("file:///home/dev/main.py#L10", "python"),
        ("file:///home/dev/notes.txt?x=.py", UNKNOWN),
        ("vscode-remote://ssh-remote+box/home/dev/app.rb", "ruby"),
        ("untitled:Untitled-1", UNKNOWN),
        ("http://[::1/main.py", "python"),  # a malformed authority must not raise
    ],
)
def test_uris_are_read_by_their_path_alone(uri: str, language: str) -> None:
    assert language_from_path(uri) == language


@pytest.mark.parametrize(
    ("path", "language"),
    [
        (None, UNKNOWN),
        ("", UNKNOWN),
        ("   ", UNKNOWN),
        ("src/", UNKNOWN),
        ("LICENSE", UNKNOWN),
        ("bin/run", UNKNOWN),
        ("notes.txt", UNKNOWN),
        ("archive.", UNKNOWN),
        (".py", UNKNOWN),  # a dotfile named ".py", not a Python file without a name
        (".gitignore", UNKNOWN),
        (".bashrc", "shell"),
        ("/home/dev/.zshrc", "shell"),
        (".eslintrc.json", "json"),
        ("config/.env.yaml", "yaml"),
    ],
)
def test_names_without_a_known_extension_and_dotfiles(path: str | None, language: str) -> None:
    assert language_from_path(path) == language


def test_a_path_never_gives_other() -> None:
    for path in ["a.elm", "\x00", "0", "__main__", "file://", "C:", "::::"]:
        assert language_from_path(path) == UNKNOWN


@pytest.mark.parametrize(
    ("value", "path", "language"),
    [
        # A known value wins, even over a path that says otherwise.
        ("python", "main.rs", "python"),
        ("py", None, "python"),
        # An unrecognised value gives way to a path that names a language.
        ("plaintext", "README.md", "markdown"),
        ("__main__", "file:///src/app.py", "python"),
        # ... and without one it is other.
        ("__main__", None, OTHER),
        ("__main__", "LICENSE", OTHER),
        # Nothing sent: the path's language, else unknown.
        (None, "src/lib.rs", "rust"),
        ("  ", "src/lib.rs", "rust"),
        ("unknown", "src/lib.rs", "rust"),
        (None, "LICENSE", UNKNOWN),
        (None, None, UNKNOWN),
        ("", "", UNKNOWN),
    ],
)
def test_resolve_prefers_a_known_value_then_the_path(
    value: str | None, path: str | None, language: str
) -> None:
    assert resolve_language(value, path) == language
