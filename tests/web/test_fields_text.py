"""The email page's fields read as they were sent: non-ASCII and `<` as themselves, escaped."""

from __future__ import annotations

import html
from pathlib import Path

from tests.support.web import logged_in_client, seed_documents, serving, web_config


async def test_the_fields_show_the_text_not_json_escapes(tmp_path: Path) -> None:
    async with serving(web_config(tmp_path)) as web, logged_in_client(web) as client:
        [event_id] = await seed_documents(
            web.app, 1, "ada@example.net",
            headers={"List-Id": "News <news.example.com>"}, metadata={"ville": "Zürich"},
        )  # fmt: skip
        page = await client.get(f"/web/emails/{event_id}")
        assert page.status_code == 200
        fields = page.text.split('id="fields"', 1)[1].split("</table>", 1)[0]
        assert "\\u00" not in fields and "\\u003c" not in fields, fields
        assert "<news.example.com>" not in fields  # escaped, never markup
        text = html.unescape(fields)
        assert '{"List-Id": "News <news.example.com>"}' in text
        assert '{"ville": "Zürich"}' in text
        assert "<th>error</th><td>null</td>" in text
