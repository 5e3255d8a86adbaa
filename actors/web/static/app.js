// mailactors web view: confirmations on actions, and the live actor tree (server-sent events,
// about once a second; polled when the browser cannot have them).
// No framework, no build step. Everything from the server goes into the page as text
// (textContent), never as HTML.
"use strict";

function meta(name) {
  const el = document.querySelector(`meta[name="${name}"]`);
  return el ? el.getAttribute("content") : "";
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function confirmForms() {
  document.addEventListener("submit", (event) => {
    const form = event.target;
    const question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });
}

function actionForm(act, process, action, label, question, path) {
  const form = el("form", {method: "post", action: act, "data-confirm": question, class: "inline"});
  form.append(el("input", {type: "hidden", name: "csrf", value: meta("csrf-token")}));
  form.append(el("input", {type: "hidden", name: "process", value: process}));
  form.append(el("input", {type: "hidden", name: "action", value: action}));
  if (path) form.append(el("input", {type: "hidden", name: "path", value: path}));
  form.append(el("button", {type: "submit", "data-action": action, "data-path": path || ""}, label));
  return form;
}

function bar(depth, capacity) {
  const pct = capacity > 0 ? Math.min(100, (100 * depth) / capacity) : 0;
  const outer = el("span", {class: "bar", title: `${depth} / ${capacity}`});
  const inner = el("span", {class: pct > 80 ? "fill hot" : "fill"});
  inner.style.width = `${pct}%`;
  outer.append(inner);
  return el("span", {}, outer, ` ${depth}/${capacity}`);
}

function renderProcess(p, act) {
  const section = el("section", {class: "process", "data-process": p.name});
  const paused = p.intake && p.intake.paused;
  section.append(el("h2", {}, `${p.name} `, el("small", {}, `pid ${p.pid}${paused ? " · intake paused" : ""}`)));
  const tools = el("div", {class: "tools"});
  tools.append(paused
    ? actionForm(act, p.name, "resume", "Resume intake", `Resume taking messages in ${p.name}?`)
    : actionForm(act, p.name, "pause", "Pause intake", `Stop taking new messages in ${p.name}?`));
  tools.append(actionForm(act, p.name, "dead_letters", `Dead letters (${p.dead_letters})`, "", ""));
  section.append(tools);
  const table = el("table", {class: "tree"});
  table.append(el("thead", {}, el("tr", {}, ...["Actor", "State", "Mailbox", "msgs/s", "Processed",
    "Restarts", "Last error", ""].map((h) => el("th", {}, h)))));
  const body = el("tbody");
  for (const a of p.actors) {
    const name = el("td", {class: "path", title: a.path}, a.name);
    name.style.paddingLeft = `${0.3 + 1.2 * a.depth}em`;
    const restart = actionForm(act, p.name, "restart", "Restart",
      `Crash ${a.path} in ${p.name} on purpose? Its supervisor restarts it.`, a.path);
    body.append(el("tr", {"data-path": a.path, "data-restarts": a.restarts},
      name, el("td", {}, el("span", {class: `state state-${a.state}`}, a.state)),
      el("td", {}, bar(a.mailbox[0], a.mailbox[1])), el("td", {}, a.rate), el("td", {}, a.processed),
      el("td", {class: "restarts"}, a.restarts), el("td", {class: "error"}, a.last_error),
      el("td", {}, restart)));
    if (a.buckets) {
      for (const [bucket, info] of Object.entries(a.buckets)) {
        body.append(el("tr", {class: "bucket"}, el("td", {}, `bucket ${bucket}`),
          el("td", {colspan: 7}, Object.entries(info).map(([k, v]) => `${k} ${v}`).join(" · "))));
      }
    }
  }
  table.append(body);
  section.append(table);
  if (p.queues) {
    section.append(el("p", {class: "queues"}, "Queues: " +
      Object.entries(p.queues).map(([q, n]) => `${q} ${n}`).join(" · ")));
  } else if (p.queues_error) {
    section.append(el("p", {class: "error"}, `Queues: ${p.queues_error}`));
  }
  return section;
}

function showTrees(root, data) {
  const act = root.getAttribute("data-act");
  const busy = root.contains(document.activeElement) && document.activeElement.tagName === "BUTTON";
  if (!busy) {
    root.replaceChildren(...data.processes.map((p) => renderProcess(p, act)));
    for (const [name, error] of Object.entries(data.errors)) {
      root.append(el("p", {class: "error"}, `${name}: ${error}`));
    }
  }
  document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

// Server-sent events: the server pushes the trees about once a second.
function streamTree(root) {
  const events = new EventSource(root.getAttribute("data-events"));
  root.setAttribute("data-mode", "events");
  events.addEventListener("tree", (event) => showTrees(root, JSON.parse(event.data)));
  events.addEventListener("error", () => {
    // CLOSED: refused (logged out, an error page); the browser will not retry, so poll.
    if (events.readyState === EventSource.CLOSED) pollTree(root);
    else document.getElementById("updated").textContent = "reconnecting…";
  });
}

// The fallback: ask once a second.
async function pollTree(root) {
  const source = root.getAttribute("data-source");
  const updated = document.getElementById("updated");
  root.setAttribute("data-mode", "polling");
  for (;;) {
    try {
      const reply = await fetch(source, {credentials: "same-origin", headers: {accept: "application/json"}});
      if (reply.ok) {
        showTrees(root, await reply.json());
      } else {
        updated.textContent = `error ${reply.status}`;
      }
    } catch (err) {
      updated.textContent = `unreachable: ${err}`;
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  confirmForms();
  const trees = document.getElementById("trees");
  if (trees) {
    if (window.EventSource) streamTree(trees);
    else pollTree(trees);
  }
});
