"""The npm package of realtime.js: the static folder realtime/static/realtime is the package (one copy of
the file, served by Django as static and installed by npm), with its TypeScript declarations checked by
compiling tests/ts/example.ts with the TypeScript pinned in tests/ts/package-lock.json."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

from realtime.client import PROTOCOL as PYTHON_PROTOCOL
from realtime.topics.protocol import SUBPROTOCOL, VERSION
from tests.js_runner import node, npm_ci
from tests.servers import ROOT, require

PACKAGE = ROOT / "realtime" / "static" / "realtime"
TS_DIR = ROOT / "tests" / "ts"


def npm() -> str:
    binary = shutil.which("npm")
    require(binary is not None, "npm")
    return binary


def test_the_typed_example_compiles_against_the_declarations():
    node()
    npm_ci(TS_DIR, TS_DIR / "node_modules" / "typescript" / "package.json")
    tsc = TS_DIR / "node_modules" / "typescript" / "bin" / "tsc"
    result = subprocess.run([node(), str(tsc), "-p", "tsconfig.json"], cwd=TS_DIR, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    version = subprocess.run([node(), str(tsc), "--version"], capture_output=True, text=True, timeout=60).stdout
    assert version.strip() == "Version " + json.loads((TS_DIR / "package.json").read_text())["devDependencies"][
        "typescript"]


def test_every_export_of_realtime_js_is_declared_and_nothing_else():
    script = "const m = await import(process.argv[1]); console.log(JSON.stringify(Object.keys(m).sort()));"
    out = subprocess.run([node(), "--input-type=module", "-e", script, (PACKAGE / "realtime.js").as_uri()],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    declared = re.findall(r"^export declare (?:const|function|class) (\w+)", (PACKAGE / "realtime.d.ts").read_text(),
                          re.M)
    assert sorted(declared) == json.loads(out)


def test_the_package_version_names_the_protocol_it_speaks():
    meta = json.loads((PACKAGE / "package.json").read_text())
    assert int(meta["version"].split(".")[0]) == VERSION
    assert f'export const PROTOCOL = "{SUBPROTOCOL}";' in (PACKAGE / "realtime.js").read_text()
    assert PYTHON_PROTOCOL == SUBPROTOCOL
    assert meta["type"] == "module"
    assert meta["exports"]["."] == {"types": "./realtime.d.ts", "default": "./realtime.js"}


def test_npm_pack_ships_the_module_and_its_types_and_node_imports_it_by_name(tmp_path):
    node()
    packed = subprocess.run([npm(), "pack", "--json", "--pack-destination", str(tmp_path)], cwd=PACKAGE,
                            capture_output=True, text=True, timeout=120, check=True)
    (info,) = json.loads(packed.stdout)
    assert sorted(entry["path"] for entry in info["files"]) == ["package.json", "realtime.d.ts", "realtime.js"]
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text('{"name": "app", "private": true}')  # typeless, as many apps are
    subprocess.run([npm(), "install", "--offline", "--no-audit", "--no-fund", str(tmp_path / info["filename"])],
                   cwd=app, capture_output=True, text=True, timeout=120, check=True)
    (app / "main.mjs").write_text(
        'import { PROTOCOL, Realtime, backoffDelay } from "django-realtime-endpoints";\n'
        "console.log(PROTOCOL, typeof Realtime, backoffDelay(0, {}, () => 0));\n"
    )
    result = subprocess.run([node(), "main.mjs"], cwd=app, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{SUBPROTOCOL} function 0"
    assert result.stderr == ""


def test_the_static_folder_as_installed_in_site_packages_loads_without_the_typeless_warning(tmp_path):
    """Node warns MODULE_TYPELESS_PACKAGE_JSON for an ES module under a package.json without "type";
    the static folder carries its own, so a copy in site-packages (under anything) loads quietly."""
    (tmp_path / "package.json").write_text('{"name": "someone-elses"}')
    folder = tmp_path / "site-packages" / "realtime" / "static" / "realtime"
    shutil.copytree(PACKAGE, folder)
    script = "const m = await import(process.argv[1]); console.log(m.PROTOCOL);"
    result = subprocess.run([node(), "--input-type=module", "-e", script, (folder / "realtime.js").as_uri()],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == SUBPROTOCOL
    assert "MODULE_TYPELESS_PACKAGE_JSON" not in result.stderr and "Warning" not in result.stderr, result.stderr
