"""Code security: does a short Python snippet have a vulnerability?

``code_security`` (label 1: vulnerable): short Python functions in safe and
vulnerable variants that differ minimally, with identifiers, tables, commands and
keys drawn at random. Thirteen kinds (``kind`` field), half safe and half
vulnerable:

- ``sql``: a parameterized query vs a value put into the SQL with an f-string or
  ``%``; an f-string that only inserts a constant table name is safe;
- ``shell``: an argument list vs ``shell=True`` or ``os.system`` with user input;
  ``shell=True`` and ``os.system`` over ``shlex.quote``-d input are safe;
- ``deserialize``: ``json.loads`` / ``yaml.safe_load`` vs ``pickle.loads`` /
  ``yaml.load`` of a request body;
- ``path``: a path joined under a base folder and checked with ``is_relative_to``,
  after ``.resolve()`` (safe) or without it (vulnerable: the check is lexical, so
  ``../`` escapes it);
- ``secret``: an API key from the environment vs a literal key in the code;
- ``eval``: ``ast.literal_eval`` vs ``eval`` of user input;
- ``tls``: ``requests.get`` with certificate checks vs ``verify=False``;
- ``token``: a reset token from ``secrets.choice`` vs ``random.choice``;
- ``sanitizer``: user input passed through ``shlex.quote``, ``html.escape`` or
  ``os.path.basename`` and then into a shell command, an HTML page or a file path:
  safe only where the sanitizer fits the sink (a label no single word carries);
- ``taint_sql``, ``taint_shell``, ``taint_eval``, ``taint_file``: a request value
  and a constant in two variables named from one list, both used, and one of them
  put into an f-string query, a ``shell=True`` command, ``eval`` or a file path:
  vulnerable only if it is the request value (again no single word tells).

The ``rule`` field is a keyword rule (vulnerable if the code contains
``shell=True``, ``os.system``, ``pickle``, ``yaml.load(``, ``eval(``,
``verify=False``, ``import random``, a ``%`` or f-string SQL query, or a string
literal assigned to a KEY/SECRET/TOKEN name): right on most minimal pairs, fooled by
the safe uses of ``shell=True``, f-strings and ``literal_eval``, and blind to paths,
sanitizers and which variable reaches a sink.
"""

from __future__ import annotations

import numpy as np

from activation_cache.suite._common import Task, finish, pick_balanced

__all__ = ["KINDS", "code_security", "rule"]

_VERBS = (
    "get",
    "find",
    "load",
    "fetch",
    "lookup",
    "read",
    "show",
    "list",
    "check",
    "search",
    "export",
    "sync",
    "handle",
    "serve",
    "resolve",
)
_NOUNS = (
    "user",
    "order",
    "invoice",
    "report",
    "profile",
    "ticket",
    "account",
    "product",
    "session",
    "comment",
    "upload",
    "document",
    "record",
    "message",
    "payment",
)
_VARS = (
    "name",
    "query",
    "value",
    "term",
    "key",
    "user_input",
    "arg",
    "text",
    "param",
    "item",
    "target",
    "filename",
    "slug",
    "label",
    "raw",
)
_TABLES = (
    "users",
    "orders",
    "invoices",
    "products",
    "tickets",
    "accounts",
    "sessions",
    "comments",
    "payments",
    "messages",
)
_COLUMNS = ("name", "email", "status", "city", "title", "owner", "region", "code")
_COMMANDS = (
    "ping -c 1",
    "nslookup",
    "whois",
    "host",
    "traceroute",
    "dig",
    "du -sh",
    "wc -l",
    "file",
    "stat",
)
_SERVICES = (
    "stripe",
    "mailgun",
    "twilio",
    "github",
    "slack",
    "openweather",
    "sendgrid",
    "dropbox",
    "shopify",
    "zendesk",
)
KINDS = (
    "sql",
    "shell",
    "deserialize",
    "path",
    "secret",
    "eval",
    "tls",
    "token",
    "sanitizer",
    "taint_sql",
    "taint_shell",
    "taint_eval",
    "taint_file",
)
"""The snippet kinds, each half safe and half vulnerable."""
_POOL_PER_KIND = 700  # candidates per kind and class


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


def _func(rng) -> str:
    return f"{_pick(rng, _VERBS)}_{_pick(rng, _NOUNS)}"


def _sql(rng, bad: bool) -> str:
    f, v, t, c = (
        _func(rng),
        _pick(rng, _VARS),
        _pick(rng, _TABLES),
        _pick(rng, _COLUMNS),
    )
    variant = int(rng.integers(2))
    if bad and variant:
        query = f"f\"SELECT * FROM {t} WHERE {c} = '{{{v}}}'\""
    elif bad:
        query = f"\"SELECT * FROM {t} WHERE {c} = '%s'\" % {v}"
    elif variant:
        query = f'f"SELECT * FROM {{TABLE}} WHERE {c} = ?", ({v},)'
    else:
        query = f'"SELECT * FROM {t} WHERE {c} = ?", ({v},)'
    head = f'TABLE = "{t}"\n\n\n' if not bad and variant else ""
    return (
        f"{head}def {f}(cursor, {v}):\n    cursor.execute({query})\n"
        "    return cursor.fetchall()"
    )


def _shell(rng, bad: bool) -> str:
    f, v, cmd = _func(rng), _pick(rng, _VARS), _pick(rng, _COMMANDS)
    variant = int(rng.integers(2))
    if bad and variant:
        imports, call = (
            "import subprocess",
            (f'subprocess.run(f"{cmd} {{{v}}}", shell=True, check=True)'),
        )
    elif bad:
        imports, call = "import os", f'os.system("{cmd} " + {v})'
    elif variant:
        imports, call = (
            "import shlex\nimport subprocess",
            (f'subprocess.run(f"{cmd} {{shlex.quote({v})}}", shell=True, check=True)'),
        )
    else:
        parts = ", ".join(f'"{p}"' for p in cmd.split())
        imports, call = (
            "import subprocess",
            (f"subprocess.run([{parts}, {v}], check=True)"),
        )
    return f"{imports}\n\n\ndef {f}({v}):\n    return {call}"


def _deserialize(rng, bad: bool) -> str:
    f, handler = _func(rng), _func(rng)
    yaml = bool(rng.integers(2))
    if yaml:
        load = (
            "yaml.load(request.body, Loader=yaml.Loader)"
            if bad
            else ("yaml.safe_load(request.body)")
        )
        imports = "import yaml"
    else:
        load = f"{'pickle' if bad else 'json'}.loads(request.body)"
        imports = f"import {'pickle' if bad else 'json'}"
    return (
        f"{imports}\n\n\ndef {f}(request):\n    data = {load}\n"
        f"    return {handler}(data)"
    )


def _path(rng, bad: bool) -> str:
    f, v = _func(rng), _pick(rng, _VARS)
    folder = _pick(rng, ("uploads", "reports", "static", "exports", "media", "docs"))
    join = f"(BASE_DIR / {v})" + ("" if bad else ".resolve()")
    return (
        f'from pathlib import Path\n\nBASE_DIR = Path("/srv/{folder}").resolve()\n'
        f"\n\ndef {f}({v}):\n"
        f"    path = {join}\n    if not path.is_relative_to(BASE_DIR):\n"
        f"        raise PermissionError({v})\n    return path.read_bytes()"
    )


def _secret(rng, bad: bool) -> str:
    service = _pick(rng, _SERVICES)
    key = f"{service.upper()}_{_pick(rng, ('API_KEY', 'SECRET', 'TOKEN'))}"
    value = (
        f'"{_pick(rng, ("sk_live_", "key-", "tok_", ""))}'
        f'{"".join(_pick(rng, "0123456789abcdef") for _ in range(24))}"'
    )
    source = value if bad else f'os.environ["{key}"]'
    return (
        f'import os\n\n{key} = {source}\nBASE_URL = "https://api.{service}.com/v2"'
        f"\n\n\ndef {_func(rng)}(session):\n"
        f'    return session.get(BASE_URL, auth=({key}, ""))'
    )


def _eval(rng, bad: bool) -> str:
    f, v = _func(rng), _pick(rng, _VARS)
    call = f"eval({v})" if bad else f"ast.literal_eval({v})"
    imports = "" if bad else "import ast\n\n\n"
    return f"{imports}def {f}({v}):\n    value = {call}\n    return value"


def _tls(rng, bad: bool) -> str:
    f, service = _func(rng), _pick(rng, _SERVICES)
    extra = ", verify=False" if bad else ""
    return (
        f"import requests\n\n\ndef {f}(path):\n"
        f'    url = f"https://api.{service}.com/{{path}}"\n'
        f"    return requests.get(url, timeout=10{extra}).json()"
    )


def _token(rng, bad: bool) -> str:
    module = "random" if bad else "secrets"
    n = int(rng.integers(16, 49))
    return (
        f"import {module}\nimport string\n\nALPHABET = string.ascii_letters + "
        f"string.digits\n\n\ndef {_func(rng)}_token():\n"
        f'    return "".join({module}.choice(ALPHABET) for _ in range({n}))'
    )


_SANITIZERS = {
    "shell": "shlex.quote",
    "html": "html.escape",
    "file": "os.path.basename",
}


def _sanitizer(rng, bad: bool) -> str:
    f, v = _func(rng), _pick(rng, _VARS)
    sink = _pick(rng, sorted(_SANITIZERS))
    others = [k for k in sorted(_SANITIZERS) if k != sink]
    clean = _SANITIZERS[_pick(rng, others) if bad else sink]
    body = {
        "shell": f'subprocess.run(f"{_pick(rng, _COMMANDS)} {{clean}}", shell=True)',
        "html": 'f"<p>Hello, {clean}</p>"',
        "file": 'open(os.path.join(UPLOAD_DIR, clean), "rb").read()',
    }[sink]
    # every sanitizer snippet imports the same modules, so no import line (or pair
    # of adjacent import lines) tells which sanitizer meets which sink
    head = "import html\nimport os\nimport shlex\nimport subprocess"
    if sink == "file":
        head += '\n\nUPLOAD_DIR = "/srv/uploads"'
    return f"{head}\n\n\ndef {f}({v}):\n    clean = {clean}({v})\n    return {body}"


_CONSTANTS = {
    "sql": ("admin", "guest", "active", "pending", "closed"),
    "shell": ("localhost", "example.com", "/var/log", "backup.tar", "127.0.0.1"),
    "eval": ("1 + 2", "[1, 2, 3]", "{'a': 1}", "2 ** 8", "(4, 5)"),
    "file": ("report.txt", "logo.png", "readme.md", "data.csv", "notes.txt"),
}


def _taint(sink: str):
    """A request value and a constant in two variables, one of which reaches a
    dangerous sink: vulnerable only if it is the request value. Both names come from
    one list and both variables are used, so only matching the name in the sink to
    the name assigned from the request tells the label."""

    def make(rng, bad: bool) -> str:
        f = _func(rng)
        pick = rng.permutation(len(_VARS))[:2]
        tainted, const = _VARS[pick[0]], _VARS[pick[1]]
        used, other = (tainted, const) if bad else (const, tainted)
        lines = [
            f'{tainted} = request.args["{_pick(rng, _VARS)}"]',
            f'{const} = "{_pick(rng, _CONSTANTS[sink])}"',
        ]
        lines = lines if rng.integers(2) else lines[::-1]
        lines.append(f'logger.info("{f} %s", {other})')
        if sink == "sql":
            t, c = _pick(rng, _TABLES), _pick(rng, _COLUMNS)
            head, args = "", "request, cursor"
            lines.append(
                f"cursor.execute(f\"SELECT * FROM {t} WHERE {c} = '{{{used}}}'\")"
            )
            lines.append("return cursor.fetchall()")
        elif sink == "shell":
            head, args = "import subprocess\n\n", "request"
            cmd = _pick(rng, _COMMANDS)
            lines.append(f'return subprocess.run(f"{cmd} {{{used}}}", shell=True)')
        elif sink == "eval":
            head, args = "", "request"
            lines.append(f"return eval({used})")
        else:
            head, args = 'import os\n\nUPLOAD_DIR = "/srv/uploads"\n\n', "request"
            lines.append(f'return open(os.path.join(UPLOAD_DIR, {used}), "rb").read()')
        body = "\n".join(f"    {line}" for line in lines)
        return f"{head}\ndef {f}({args}):\n{body}".lstrip("\n")

    return make


_MAKERS = {
    "sql": _sql,
    "shell": _shell,
    "deserialize": _deserialize,
    "path": _path,
    "secret": _secret,
    "eval": _eval,
    "tls": _tls,
    "token": _token,
    "sanitizer": _sanitizer,
    "taint_sql": _taint("sql"),
    "taint_shell": _taint("shell"),
    "taint_eval": _taint("eval"),
    "taint_file": _taint("file"),
}

_RULE_WORDS = (
    "shell=True",
    "os.system",
    "pickle",
    "yaml.load(",
    "eval(",
    "verify=False",
    "import random",
    '" % ',
    'f"SELECT',
)


def rule(code: str) -> bool:
    """A keyword rule for whether ``code`` is vulnerable: the ``rule`` field."""
    if any(w in code for w in _RULE_WORDS):
        return True
    for line in code.splitlines():
        name, sep, value = line.partition(" = ")
        if (
            sep
            and value.startswith('"')
            and any(w in name for w in ("KEY", "SECRET", "TOKEN"))
        ):
            return True
    return False


LARGEST = 2 * len(KINDS) * _POOL_PER_KIND


def code_security(size: int, seed: int) -> Task:
    """``code_security`` (label 1: vulnerable), with ``kind`` and ``rule`` fields."""
    rng = np.random.default_rng([seed, 4])
    pools: dict[bool, list[tuple[str, str]]] = {True: [], False: []}
    seen: set[str] = set()
    for kind in KINDS:
        for bad in (True, False):
            made = 0
            while made < _POOL_PER_KIND:
                text = _MAKERS[kind](rng, bad)
                if text not in seen:
                    seen.add(text)
                    pools[bad].append((kind, text))
                    made += 1
    texts, labels, kinds = pick_balanced(
        "code_security", pools[True], pools[False], size, seed
    )
    rules = [str(int(rule(t))) for t in texts]
    return finish("code_security", texts, labels, seed, {"kind": kinds, "rule": rules})
