"""Every way a program calls the live app, from a separate process: MCP over streamable HTTP, and curl (the
README's commands, run as written) with no gradio_client."""

import ast
import asyncio
import base64
import json
import re
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.live
PHOTO = ROOT / "examples" / "seki-giant-sequoia-tree.jpg"


async def mcp_session(url: str, work):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async with streamablehttp_client(url + "gradio_api/mcp/") as (read, write, _), ClientSession(read, write) as s:
        await s.initialize()
        return await work(s)


def test_mcp_lists_documented_tools_and_classifies_a_real_photo(server):
    photo = "data:image/jpeg;base64," + base64.b64encode(PHOTO.read_bytes()).decode()

    async def work(session):
        tools = {t.name: t for t in (await session.list_tools()).tools}
        result = await session.call_tool("predict", {"image": photo})
        return tools, result

    tools, result = asyncio.run(mcp_session(server.url, work))
    assert set(tools) == {"predict", "explain"}, set(tools)
    assert "sequoia, yellowstone, yosemite" in tools["predict"].description
    assert "abstained" in tools["predict"].description
    assert tools["predict"].inputSchema["required"] == ["image"]
    assert "the photo to classify" in tools["predict"].inputSchema["properties"]["image"]["description"]
    assert not result.isError, result
    answer = ast.literal_eval(result.content[0].text)  # Gradio hands a dict back as its Python repr
    assert answer["label"] == "sequoia" and answer["abstained"] is False
    assert set(answer["confidences"]) == {"sequoia", "yellowstone", "yosemite"}


def readme_block(marker: str) -> str:
    """The README's fenced code block that contains ``marker``: what users copy is what is tested."""
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", (ROOT / "README.md").read_text(), re.S):
        if marker in block:
            return block
    raise AssertionError(f"README.md has no bash block with {marker!r}")


def test_the_readme_curl_example_runs_as_written(server, tmp_path):
    script = readme_block("/gradio_api/call/predict")
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, env={"PATH": "/usr/bin:/bin", "URL": server.url.rstrip("/")})
    assert r.returncode == 0, r.stderr
    assert "event: complete" in r.stdout, r.stdout
    data = json.loads(r.stdout.split("event: complete")[1].split("data:", 1)[1].strip().splitlines()[0])
    assert data[0]["label"] == "sequoia" and data[0]["abstained"] is False, data


def test_the_readme_python_example_runs_as_written(server):
    """The README's gradio_client example, pointed at this server, in a separate process: it prints the answer."""
    block = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    code = next(b for b in block if "from gradio_client import Client" in b)
    code = code.replace('"http://127.0.0.1:7860"', repr(server.url))
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    printed = [line for line in r.stdout.splitlines() if line.startswith(("{", "["))]  # not "Loaded as API: ..."
    first = ast.literal_eval(printed[0])
    assert first["label"] == "sequoia" and not first["abstained"]
    assert len(ast.literal_eval(printed[1])) == 2


def test_api_page_names_inputs_and_outputs(server):
    from gradio_client import Client

    api = Client(server.url, verbose=False).view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(api) == {"/predict", "/predict_batch", "/explain"}
    assert [p["parameter_name"] for p in api["/predict"]["parameters"]] == ["image"]
    assert [r["label"] for r in api["/explain"]["returns"]] == ["overlay", "prediction"]
    assert [r["label"] for r in api["/predict_batch"]["returns"]] == ["predictions"]
