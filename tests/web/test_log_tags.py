"""The email log's tag and metadata filters (issue 17: tags searchable in the web view).

Plain httpx over loopback against a running embedded system.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from tests.support.web import logged_in_client, seed_documents, serving, web_config


def _shown(html: str) -> set[str]:
    return set(re.findall(r'data-event-id="([^"]+)"', html))


async def test_the_log_filters_by_tags_and_metadata(tmp_path: Path) -> None:
    async with serving(web_config(tmp_path)) as web, logged_in_client(web) as c:
        app = web.app
        vip = await seed_documents(app, 2, "vip@example.com", tags=["receipt", "vip"],
                                   metadata={"order": "A-1", "shop": "north"})  # fmt: skip
        plain = await seed_documents(app, 2, "plain@example.com", tags=["receipt"],
                                     metadata={"order": "B-2", "shop": "north"})  # fmt: skip
        await seed_documents(app, 1, "none@example.com")

        page = await c.get("/web/emails", params={"tags": "receipt"})
        assert page.status_code == 200
        assert _shown(page.text) == set(vip + plain)
        assert "4 matching" in page.text
        page = await c.get("/web/emails", params={"tags": "vip, receipt"})
        assert _shown(page.text) == set(vip)
        page = await c.get("/web/emails", params={"meta": "order=B-2"})
        assert _shown(page.text) == set(plain)
        page = await c.get("/web/emails", params={"meta": "shop=north, order=A-1",
                                                  "tags": "receipt"})  # fmt: skip
        assert _shown(page.text) == set(vip)
        # The form shows what was asked, so the next page and a refined search keep it.
        assert 'name="meta" value="shop=north, order=A-1"' in page.text
        assert 'name="tags" value="receipt"' in page.text
        page = await c.get("/web/emails", params={"tags": "nobody-has-this"})
        assert _shown(page.text) == set()


async def test_the_log_pages_on_with_the_tag_filter(tmp_path: Path) -> None:
    async with serving(web_config(tmp_path)) as web, logged_in_client(web) as c:
        tagged = await seed_documents(web.app, 25, "t@example.com", tags=["batch-7"])
        await seed_documents(web.app, 25, "u@example.com")
        page = await c.get("/web/emails", params={"tags": "batch-7", "size": "20"})
        first = _shown(page.text)
        link = re.search(r'href="([^"]+)" id="next-page"', page.text)
        assert link, "no next page"
        assert "tags=batch-7" in link.group(1)
        second = _shown((await c.get(link.group(1).replace("&amp;", "&"))).text)
        assert first | second == set(tagged) and not first & second


async def test_bad_metadata_is_refused_naming_the_field(tmp_path: Path) -> None:
    async with serving(web_config(tmp_path)) as web, logged_in_client(web) as c:
        for meta, words in [("no-equals-sign", "expects key=value"),
                            ("=v", "expects key=value"),
                            ("a=1, a=2", "given twice"),
                            ("bad key!=1", "must match")]:  # fmt: skip
            page = await c.get("/web/emails", params={"meta": meta})
            assert page.status_code == 400, meta
            assert "metadata" in page.text and words in page.text, (meta, page.text[-800:])
            assert f'name="meta" value="{meta}"' in page.text  # kept in the form to correct
        # Any bad field gets the page with its error, not a server error.
        page = await c.get("/web/emails", params={"status": "NOPE", "tags": "x"})
        assert page.status_code == 400 and "not a status" in page.text


async def test_bad_tags_and_metadata_follow_the_api_rules_with_400(tmp_path: Path) -> None:
    """The log's filters are held to the rules SearchEmails and ``search --tag/--meta`` use: a
    filter no email could match is named on the page, not an empty log."""
    async with serving(web_config(tmp_path)) as web, logged_in_client(web) as c:
        await seed_documents(web.app, 1, "t@example.com", tags=["receipt"])
        for params, said in [({"tags": "receipt, bad tag"}, "tags[1]: must match ^"),
                             ({"tags": ",".join(f"t{i}" for i in range(11))},
                              "tags: 11 tags, more than 10"),
                             ({"meta": "k=" + "v" * 300},
                              "metadata['k']: is 300 characters, more than 256"),
                             ({"meta": "k" * 65 + "=1"}, "metadata: key 'kkk")]:  # fmt: skip
            page = await c.get("/web/emails", params=params)
            assert page.status_code == 400, params
            assert said in html.unescape(page.text), (params, page.text[-800:])
            assert _shown(page.text) == set()
        page = await c.get("/web/emails", params={"tags": "receipt"})
        assert page.status_code == 200 and len(_shown(page.text)) == 1
