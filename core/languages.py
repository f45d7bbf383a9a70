"""The closed set of language ids CodeLift stores, and how client values and paths map onto it.

Every per-language figure (analysis drill-downs, rollups, the dashboard's filter, experiment
targeting) groups by the stored id, so the id must not depend on how a client spells it: VS Code
sends ``typescriptreact``, JetBrains ``TypeScript JSX``, Neovim ``sh``, a script ``py``, and a
fuzzer anything at all. Values are therefore folded onto a fixed set of ids, plus two special
values that keep "nothing was said" apart from "something unrecognised was said":

- ``unknown``: no language was sent and no path tells it;
- ``other``: a value was sent, but it names no language of the set (``0``, ``__main__``,
  ``plaintext``, control characters): stored as one bucket, so junk cannot grow the set of ids.

Standard library only: the collector and the gateway both import it.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from typing import Final

UNKNOWN: Final = "unknown"
OTHER: Final = "other"

# id -> (aliases, file extensions, file names). Aliases are lower case with single spaces (how
# values are compared); they cover VS Code language identifiers, JetBrains language ids and
# names, Neovim filetypes, GitHub linguist names and common abbreviations. Extensions and file
# names follow linguist's, lower case (paths are compared case-insensitively: Windows and
# macOS file systems are). The ids already stored by the simulator and the experiments
# (``cpp``, ``csharp``, ...) are kept as they are.
_TABLE: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]]] = {
    "python": (
        ("py", "python2", "python3", "py3", "ipython", "jython"),
        (".py", ".pyi", ".pyw"),
        (),
    ),
    "typescript": (
        ("ts", "tsx", "typescriptreact", "typescript jsx", "typescript react", "mts", "cts"),
        (".ts", ".tsx", ".mts", ".cts"),
        (),
    ),
    "javascript": (
        (
            "js",
            "jsx",
            "javascriptreact",
            "javascript react",
            "node",
            "nodejs",
            "ecmascript",
            "ecmascript 6",
            "jsx harmony",
            "mjs",
            "cjs",
        ),
        (".js", ".jsx", ".mjs", ".cjs"),
        (),
    ),
    "java": ((), (".java",), ()),
    "go": (("golang",), (".go",), ()),
    "rust": (("rs",), (".rs",), ()),
    "cpp": (
        ("c++", "cxx", "cc", "hpp", "cplusplus"),
        (".cpp", ".cc", ".cxx", ".c++", ".hpp", ".hh", ".hxx", ".h++", ".ipp", ".inl", ".tpp"),
        (),
    ),
    # ``.h`` is C, as in linguist: a C++ header is told apart only by its content.
    "c": ((), (".c", ".h"), ()),
    "csharp": (("c#", "cs", "c sharp"), (".cs", ".csx"), ()),
    "kotlin": (("kt", "kts"), (".kt", ".kts"), ()),
    "ruby": (
        ("rb", "jruby"),
        (".rb", ".rake", ".gemspec", ".ru"),
        ("gemfile", "rakefile", "podfile", "vagrantfile", "brewfile", "guardfile"),
    ),
    "php": (("php5", "php7", "php8"), (".php", ".phtml"), ()),
    "swift": ((), (".swift",), ()),
    "scala": (("sbt",), (".scala", ".sc", ".sbt"), ()),
    # One id for the Unix shells: their scripts are completed alike.
    "shell": (
        ("shellscript", "shell script", "sh", "bash", "zsh", "ksh", "fish", "shellsession"),
        (".sh", ".bash", ".zsh", ".ksh", ".fish"),
        (
            ".bashrc",
            ".bash_profile",
            ".bash_aliases",
            ".bash_logout",
            ".profile",
            ".zshrc",
            ".zprofile",
            ".zshenv",
            "pkgbuild",
        ),
    ),
    "sql": (
        ("mysql", "postgresql", "postgres", "pgsql", "plpgsql", "sqlite", "tsql", "plsql"),
        (".sql",),
        (),
    ),
    "lua": ((), (".lua",), ()),
    "html": (("htm", "xhtml"), (".html", ".htm", ".xhtml"), ()),
    # Preprocessors share the id: the analysis cares about the stylesheet, not the dialect.
    "css": (("scss", "sass", "less"), (".css", ".scss", ".sass", ".less"), ()),
    "json": (
        ("jsonc", "json5", "jsonl", "json lines"),
        (".json", ".jsonc", ".json5", ".jsonl"),
        (),
    ),
    "yaml": (("yml",), (".yaml", ".yml"), ()),
    "markdown": (("md", "mdown"), (".md", ".markdown", ".mdown", ".mkd"), ()),
    "dart": ((), (".dart",), ()),
    "r": (("rscript",), (".r",), ()),
    "haskell": (("hs",), (".hs", ".lhs"), ()),
    "elixir": (("ex", "exs"), (".ex", ".exs"), ()),
    "clojure": (
        ("clj", "cljs", "cljc", "clojurescript", "edn"),
        (".clj", ".cljs", ".cljc", ".edn"),
        (),
    ),
    "ocaml": ((), (".ml", ".mli"), ()),
    # ``.pl`` is also Prolog's; Perl is by far the more common in the editors we serve.
    "perl": (("pl", "perl5"), (".pl", ".pm"), ()),
    "julia": (("jl",), (".jl",), ()),
    "zig": ((), (".zig",), ()),
    "vue": ((), (".vue",), ()),
    "svelte": ((), (".svelte",), ()),
    # Objective-C and Objective-C++ share an id. ``.m`` is also MATLAB's: without the file's
    # content the far more common Objective-C is the better guess for a completion tool.
    "objectivec": (
        ("objective-c", "objc", "objective c", "objective-cpp", "objective-c++", "objcpp"),
        (".m", ".mm"),
        (),
    ),
    "xml": (("xsd", "xsl", "xslt"), (".xml", ".xsd", ".xsl", ".xslt"), ()),
    "toml": ((), (".toml",), ()),
    "dockerfile": (("docker", "containerfile"), (".dockerfile",), ("dockerfile", "containerfile")),
    "makefile": (("make", "gnumakefile"), (".mk", ".mak"), ("makefile", "gnumakefile")),
    "powershell": (("ps1", "pwsh", "posh"), (".ps1", ".psm1", ".psd1"), ()),
    "groovy": (("gradle",), (".groovy", ".gradle"), ("jenkinsfile",)),
    "fsharp": (("f#", "fs", "f sharp"), (".fs", ".fsi", ".fsx"), ()),
    "erlang": (("erl",), (".erl", ".hrl"), ()),
}

LANGUAGES: Final[frozenset[str]] = frozenset(_TABLE)
"""The known language ids; with ``unknown`` and ``other`` the only values ever stored."""

# No alias may be longer: longer values are ``other`` without further work, which bounds what
# a hostile client can make the hot path do.
_LONGEST_ALIAS = 32
# Only ASCII whitespace is folded. str.split() and str.strip() would also drop the separators
# U+001C-U+001F and other control characters, so "\x1fpython" would pass for "python".
_SPACE = " \t\n\r\f\v"
_SPACES = re.compile(r"[ \t\n\r\f\v]+")
# "scheme:" of a URI. Two letters at least, so a Windows drive ("C:\\src") is not a scheme.
_URI_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]+:")


def _index(column: int) -> dict[str, str]:
    # One column of the table as key -> id; a key claimed twice is an error in the table
    # (caught at import, so in every test run), never a silent choice of one of the two.
    index: dict[str, str] = {}
    for language, columns in _TABLE.items():
        keys = (language, *columns[0]) if column == 0 else columns[column]
        for key in keys:
            if key in index:
                raise ValueError(f"{key!r} maps to both {index[key]!r} and {language!r}")
            index[key] = language
    return index


_ALIASES: Final[Mapping[str, str]] = {
    **_index(0),
    # The special values map to themselves, so normalising a stored value changes nothing.
    UNKNOWN: UNKNOWN,
    OTHER: OTHER,
}
_EXTENSIONS: Final[Mapping[str, str]] = _index(1)
_FILENAMES: Final[Mapping[str, str]] = _index(2)
if any(len(alias) > _LONGEST_ALIAS for alias in _ALIASES):
    raise ValueError(f"an alias is longer than {_LONGEST_ALIAS} characters")


def normalise_language(value: str | None) -> str:
    """The language id a client's value names: a known id, ``unknown`` (blank) or ``other``.

    Case, surrounding whitespace and runs of inner whitespace do not matter (``" TypeScript
    JSX "`` is ``typescript``); anything else must match an id or alias exactly, so a value
    with control characters, or longer than any alias, is ``other``.
    """
    if value is None:
        return UNKNOWN
    # Most clients already send an id: one dictionary look-up.
    known = _ALIASES.get(value)
    if known is not None:
        return known
    stripped = value.strip(_SPACE)
    if not stripped:
        return UNKNOWN
    if len(stripped) > _LONGEST_ALIAS:
        # Folding inner whitespace could make it shorter, but no editor pads a name that much.
        return OTHER
    return _ALIASES.get(_SPACES.sub(" ", stripped.lower()), OTHER)


def language_from_path(path: str | None) -> str:
    """The language id of a file by its name or extension, or ``unknown`` when neither tells.

    Takes POSIX and Windows paths and URIs (``file:///c%3A/src/app.py``, ``untitled:Untitled-1``:
    LSP clients and Tabby send URIs); a URI's query and fragment are never read as part of the
    name. A leading dot starts a name, not an extension (``.bashrc`` is a file name, ``.py`` has
    no extension). Never ``other``: a path names no language rather than a wrong one.
    """
    if not path:
        return UNKNOWN
    text = path.strip(_SPACE)
    scheme = _URI_SCHEME.match(text)
    if scheme is not None:
        # By hand rather than urlsplit, which raises on a malformed authority ("//[::1").
        rest = text[scheme.end() :]
        for mark in "?#":
            rest = rest.partition(mark)[0]
        text = urllib.parse.unquote(rest)
    name = text.replace("\\", "/").rsplit("/", 1)[-1].lower()
    by_name = _FILENAMES.get(name)
    if by_name is not None:
        return by_name
    _, dot, extension = name.lstrip(".").rpartition(".")
    if not dot:
        return UNKNOWN
    return _EXTENSIONS.get("." + extension, UNKNOWN)


def resolve_language(value: str | None, path: str | None) -> str:
    """The language of a request that may carry a language value, a file path, both or neither.

    A known value wins (the editor knows the buffer's mode better than its name does); a value
    that is missing, blank or not recognised gives way to a path that names a language; with no
    such path an unrecognised value is ``other`` and no value at all is ``unknown``.
    """
    language = normalise_language(value)
    if language in LANGUAGES:
        return language
    from_path = language_from_path(path)
    return from_path if from_path != UNKNOWN else language
