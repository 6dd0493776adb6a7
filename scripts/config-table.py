#!/usr/bin/env python3
"""config-table.py: regenerates the README's table of every daemon setting from the daemons' -h.

    python3 scripts/config-table.py          # rewrite README.md between the config-table markers
    python3 scripts/config-table.py --check  # exit 1 if README.md is stale (make test runs this)
"""
import os, re, socket, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAEMONS = ["ingest", "encryptor", "auditor", "forwarder", "reader", "settings"]
BEGIN, END = "<!-- config-table:begin -->", "<!-- config-table:end -->"


def rows(name):
    out = subprocess.run(["go", "run", "./" + name, "-h"], cwd=os.path.join(ROOT, "services"),
                         capture_output=True, text=True).stderr
    flags = re.findall(r"^  -(\S+)(?: (\S+))?\n((?:    \t.*\n?)+)", out, re.M)
    res = []
    for flag, typ, text in flags:
        text = " ".join(l.strip() for l in text.splitlines())
        m = re.search(r"\s*\(env (BYOK_[A-Z0-9_]+)\)", text)
        if not m:
            sys.exit(f"config-table: {name} -{flag} has no env variable")
        env, meaning, rest = m.group(1), text[:m.start()], text[m.end():]
        d = re.match(r'\s*\(default (.*)\)$', rest)
        # flag omits zero defaults: show them as Go would parse an unset flag.
        zero = {"": "false", "int": "0", "duration": "0s"}.get(typ or "", "")
        default = d.group(1).strip('"') if d else zero
        # Defaults derived from the machine are shown as placeholders, so the table is the same everywhere.
        default = default.replace(socket.gethostname(), "<host>")
        default = re.sub(r"<host>-\d+$", "<host>-<pid>", default).replace("|", "\\|")
        meaning = meaning.replace("|", "\\|")
        res.append(f"| {name} | `-{flag}` | `{env}` | " + (f"`{default}`" if default else "—") + f" | {meaning} |")
    if not res:
        sys.exit(f"config-table: no flags parsed from `{name} -h`")
    return res


def main():
    table = ["| service | flag | env | default | meaning |", "|---|---|---|---|---|"]
    for d in DAEMONS:
        table += rows(d)
    path = os.path.join(ROOT, "README.md")
    readme = open(path).read()
    i, j = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    new = readme[:i] + "\n" + "\n".join(table) + "\n" + readme[j:]
    if "--check" in sys.argv:
        if new != readme:
            sys.exit("README.md's configuration table is stale: run python3 scripts/config-table.py")
        return
    open(path, "w").write(new)


main()
