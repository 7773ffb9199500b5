// Behaviours the pages share; every page also works without them.
document.addEventListener("change", (event) => {
  const select = event.target.closest(".tenant-switcher select");
  if (select) select.form.requestSubmit();
});

// ---- Queue page: selection, the detail pane, keyboard ------------------------------------
const queue = {
  rows: () => Array.from(document.querySelectorAll("#rows tr.queue-row")),
  current: () => document.querySelector("#rows tr.queue-row.current"),
  lastChecked: null,

  setCurrent(row, open) {
    for (const r of queue.rows()) r.classList.remove("current");
    if (!row) return;
    row.classList.add("current");
    row.scrollIntoView({ block: "nearest" });
    if (open) queue.open(row);
  },
  open(row) {
    htmx.ajax("GET", row.dataset.paneUrl, { target: "#pane", swap: "innerHTML" });
  },
  move(step) {
    const rows = queue.rows();
    if (!rows.length) return;
    const index = rows.indexOf(queue.current());
    const next = rows[Math.min(rows.length - 1, Math.max(0, index + step))] || rows[0];
    queue.setCurrent(next, false);
  },
  updateSelected() {
    const count = document.querySelectorAll("#rows input[name=selected_ids]:checked").length;
    const label = document.querySelector(".selected-count");
    if (label) label.textContent = `${count} selected`;
  },
};

// Shift-click selects a range of rows.
document.addEventListener("click", (event) => {
  const box = event.target.closest("#rows input[name=selected_ids]");
  if (box) {
    const boxes = Array.from(document.querySelectorAll("#rows input[name=selected_ids]"));
    if (event.shiftKey && queue.lastChecked) {
      const [a, b] = [boxes.indexOf(queue.lastChecked), boxes.indexOf(box)].sort((x, y) => x - y);
      for (const other of boxes.slice(a, b + 1)) other.checked = box.checked;
    }
    queue.lastChecked = box;
    queue.updateSelected();
    return;
  }
  if (event.target.closest("#select-all")) {
    const all = event.target.checked;
    for (const b of document.querySelectorAll("#rows input[name=selected_ids]")) b.checked = all;
    queue.updateSelected();
    return;
  }
  const link = event.target.closest("#rows a.open-item");
  if (link) queue.setCurrent(link.closest("tr"), false);
});

// When an action's response replaces or removes the current row (out of band), keep the focus
// on that row, or move it to the next one when the item left the queue.
let focusAfterSwap = null;
document.body.addEventListener("htmx:oobBeforeSwap", (event) => {
  const target = event.detail.target;
  if (!target || !target.matches || !target.matches("tr.queue-row.current")) return;
  const rows = queue.rows();
  const index = rows.indexOf(target);
  const next = rows[index + 1] || rows[index - 1];
  focusAfterSwap = { id: target.id, nextId: next ? next.id : null };
});
document.body.addEventListener("htmx:afterSettle", () => {
  if (focusAfterSwap) {
    const same = document.getElementById(focusAfterSwap.id);
    const next = focusAfterSwap.nextId && document.getElementById(focusAfterSwap.nextId);
    queue.setCurrent(same || next || null, false);
    focusAfterSwap = null;
  }
  queue.updateSelected();
});

// Act on the current row from the keyboard: the pane shows the result (and its timeline).
queue.act = (action) => {
  const row = queue.current();
  if (!row) return false;
  const page = document.getElementById("queue-page");
  const filters = new URLSearchParams(new URL(row.dataset.paneUrl, location.href).search);
  filters.delete("queue");
  htmx.ajax("POST", `/items/${row.dataset.itemId}/act`, {
    source: row, target: "#pane", swap: "innerHTML",
    values: { action, queue: page.dataset.queue, filters: filters.toString() },
  });
  return true;
};

// The item open in the pane (shortcuts act on it), and whether it is the highlighted row's.
queue.openItemId = () => {
  const panel = document.querySelector("#item-panel");
  return panel ? panel.dataset.itemId : null;
};
queue.rowTitle = (row) => {
  const link = row.querySelector("a.open-item");
  return (link ? link.textContent : row.dataset.itemId).trim();
};

// Focus on something that acts on Enter or Space of its own (a link, a button, a field, a
// summary): the key is that control's, never a shortcut's.
const ownsKeys = (el) => !!(el && el.closest && el.closest(
  "a[href], button, input, textarea, select, summary, label, [contenteditable], dialog, [role=button]"));

// Keyboard shortcuts, unless typing in a field.
document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const tag = (event.target.tagName || "").toLowerCase();
  if (["input", "textarea", "select"].includes(tag) || event.target.isContentEditable) return;
  if (document.querySelector("dialog[open]")) return;
  if ((event.key === "Enter" || event.key === " ") && ownsKeys(event.target)) return;
  const inQueue = !!document.getElementById("queue-page");
  const press = (selector) => {
    const el = document.querySelector(selector);
    if (el) { event.preventDefault(); el.click(); }
    return !!el;
  };
  switch (event.key) {
    case "j": if (inQueue) { event.preventDefault(); queue.move(1); } break;
    case "k": if (inQueue) { event.preventDefault(); queue.move(-1); } break;
    case "Enter": {
      const row = queue.current();
      if (inQueue && row) { event.preventDefault(); queue.open(row); }
      break;
    }
    case "x": {
      const row = queue.current();
      const box = row && row.querySelector("input[name=selected_ids]");
      if (box) { event.preventDefault(); box.checked = !box.checked; queue.lastChecked = box; queue.updateSelected(); }
      break;
    }
    case "a": {
      // Approve the item open in the pane (its own button, with its version). An item that
      // was only highlighted, never opened, is approved only after one question.
      if (press("#item-panel button[data-action=approve]")) break;
      const row = inQueue && queue.current();
      if (row && row.dataset.itemId !== queue.openItemId()) {
        event.preventDefault();
        if (window.confirm(`Approve “${queue.rowTitle(row)}” without opening it?`)) queue.act("approve");
      }
      break;
    }
    case "c": {
      if (press("#item-panel button[data-action=claim], #item-panel button[data-action=release]")) break;
      const row = inQueue && queue.current();
      if (row) {
        event.preventDefault();
        const assigned = row.querySelector("td.assignee").textContent.trim() !== "—";
        queue.act(assigned ? "release" : "claim");
      }
      break;
    }
    case "r": {
      // Rejecting needs a reason: open the item and put the cursor in the reason box.
      const focusReason = () => {
        const reason = document.querySelector("#item-panel form:has(button[data-action=reject]) textarea");
        if (reason) reason.focus();
        return !!reason;
      };
      const row = queue.current();
      event.preventDefault();
      if (inQueue && row && row.dataset.itemId !== queue.openItemId()) {
        queue.open(row);
        document.body.addEventListener("htmx:afterSettle", focusReason, { once: true });
      } else focusReason();
      break;
    }
    case "?": {
      const dialog = document.getElementById("shortcuts");
      if (dialog) { event.preventDefault(); dialog.showModal(); }
      break;
    }
    default: break;
  }
});

// After an action: a short confirmation of what truly happened, announced once by the live
// region (the pane itself is not re-read).
let toastTimer = null;
document.body.addEventListener("cleardesk:acted", (event) => {
  const message = event.detail && event.detail.message;
  const toast = document.getElementById("toast");
  if (!message || !toast) return;
  toast.textContent = message;
  toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { toast.hidden = true; }, 10000);
});

// Messages answer the last thing done: the next action (a POST) or opening another item
// clears them, so a stale error never reads as the answer to the next keypress.
document.body.addEventListener("htmx:beforeRequest", (event) => {
  const verb = (event.detail.requestConfig && event.detail.requestConfig.verb) || "";
  const target = event.detail.target;
  if (verb.toLowerCase() === "get" && !(target && target.id === "pane")) return;
  const messages = document.getElementById("messages");
  if (messages) messages.replaceChildren();
  const toast = document.getElementById("toast");
  if (toast) toast.hidden = true;
});

// A request the server could not answer (down, or an error page) says so instead of
// silently doing nothing.
function showRequestError(text) {
  const messages = document.getElementById("messages");
  if (!messages) return;
  const note = document.createElement("div");
  note.className = "flash flash-error";
  note.setAttribute("role", "alert");
  note.textContent = text;
  messages.replaceChildren(note);
}
document.body.addEventListener("htmx:sendError", () => {
  showRequestError("Cleardesk could not be reached; nothing was changed. Try again in a moment.");
});
// Our own error answers name where their message goes (HX-Retarget); a server error that is
// not one of them (a proxy's page, a server restarting) is not swapped into the page.
function foreignServerError(xhr) {
  return xhr && xhr.status >= 500 && !xhr.getResponseHeader("HX-Retarget");
}
document.body.addEventListener("htmx:beforeSwap", (event) => {
  if (foreignServerError(event.detail.xhr)) event.detail.shouldSwap = false;
});
document.body.addEventListener("htmx:responseError", (event) => {
  if (!foreignServerError(event.detail.xhr)) return;
  showRequestError(`Cleardesk could not finish that (the server answered ${event.detail.xhr.status}). `
    + "Reload the page to see what was saved, then try again.");
});

// Filter URLs carry only the filters that are set, so they read well when shared.
document.body.addEventListener("htmx:configRequest", (event) => {
  if (!event.detail.elt || event.detail.elt.id !== "filters") return;
  const params = event.detail.parameters;
  for (const [key, value] of Array.from(params.entries())) {
    if (value === "" || (key === "sort" && value === "sla")) params.delete(key);
  }
});

// ---- The item pane as a screen of its own on a phone ------------------------------------
// Opening an item shows the pane full-width ("Back to the list", or the phone's own back,
// returns to the list where it was). The CSS does the showing; the class says an item is open.
const phone = window.matchMedia("(max-width: 48rem)");
const paneScreen = {
  listScroll: 0,
  layout: () => document.getElementById("queue-page"),
  isOpen() { const l = paneScreen.layout(); return !!(l && l.classList.contains("pane-open")); },
  open() {
    const layout = paneScreen.layout();
    if (!layout || paneScreen.isOpen()) return;
    paneScreen.listScroll = window.scrollY;
    layout.classList.add("pane-open");
    if (!phone.matches) return;
    // A history entry of our own, so the phone's back button closes the pane.
    history.pushState({ cleardeskPane: true }, "", location.href);
    window.scrollTo(0, 0);
    const back = layout.querySelector(".pane-back");
    if (back) back.focus({ preventScroll: true });
  },
  close() {
    const layout = paneScreen.layout();
    if (!layout || !paneScreen.isOpen()) return;
    layout.classList.remove("pane-open");
    if (!phone.matches) return;
    window.scrollTo(0, paneScreen.listScroll);
    const row = queue.current();
    const link = row && row.querySelector("a.open-item");
    if (link) link.focus({ preventScroll: true });
  },
};
document.body.addEventListener("htmx:afterSwap", (event) => {
  const target = event.detail.target;
  if (target && target.id === "pane" && target.querySelector("#item-panel")) paneScreen.open();
});
document.addEventListener("click", (event) => {
  if (!event.target.closest(".pane-back")) return;
  if (history.state && history.state.cleardeskPane) history.back();  // popstate closes it
  else paneScreen.close();
});
// Registered before htmx's own history handler (this script runs before the page is ready),
// so leaving the pane is not taken for a navigation to restore.
window.addEventListener("popstate", (event) => {
  if (paneScreen.isOpen()) {
    event.stopImmediatePropagation();
    paneScreen.close();
  } else if (event.state && event.state.cleardeskPane) {
    location.reload();  // back onto a pane entry from another page: show that queue afresh
  }
});

// ---- The splitter between the list and the pane: drag it, or arrow keys on it ----------
const paneWidth = {
  min: 18, max: 60, step: 2, key: "cleardesk.paneWidth",
  rem: () => parseFloat(getComputedStyle(document.documentElement).fontSize) || 16,
  set(layout, rems) {
    const width = Math.round(Math.min(paneWidth.max, Math.max(paneWidth.min, rems)));
    layout.style.setProperty("--pane-width", `${width}rem`);
    const splitter = layout.querySelector(".pane-splitter");
    if (splitter) splitter.setAttribute("aria-valuenow", String(width));
    try { localStorage.setItem(paneWidth.key, String(width)); } catch (e) { /* private mode */ }
  },
  restore() {
    const layout = document.getElementById("queue-page");
    let saved = null;
    try { saved = localStorage.getItem(paneWidth.key); } catch (e) { /* private mode */ }
    if (layout && saved) paneWidth.set(layout, Number(saved));
  },
};
paneWidth.restore();
document.body.addEventListener("htmx:afterSettle", () => {
  const layout = document.getElementById("queue-page");
  if (layout && !layout.style.getPropertyValue("--pane-width")) paneWidth.restore();
});
document.addEventListener("pointerdown", (event) => {
  const splitter = event.target.closest(".pane-splitter");
  if (!splitter || event.button !== 0) return;
  const layout = splitter.closest(".queue-layout");
  event.preventDefault();
  splitter.setPointerCapture(event.pointerId);
  splitter.classList.add("dragging");
  layout.classList.add("resizing");
  const right = layout.getBoundingClientRect().right;
  const move = (e) => paneWidth.set(layout, (right - e.clientX) / paneWidth.rem());
  const stop = () => {
    splitter.classList.remove("dragging");
    layout.classList.remove("resizing");
    splitter.removeEventListener("pointermove", move);
  };
  splitter.addEventListener("pointermove", move);
  splitter.addEventListener("pointerup", stop, { once: true });
  splitter.addEventListener("pointercancel", stop, { once: true });
});
document.addEventListener("keydown", (event) => {
  const splitter = event.target.closest && event.target.closest(".pane-splitter");
  if (!splitter) return;
  const layout = splitter.closest(".queue-layout");
  const now = Number(splitter.getAttribute("aria-valuenow"));
  const to = { ArrowLeft: now + paneWidth.step, ArrowRight: now - paneWidth.step,
    Home: paneWidth.max, End: paneWidth.min }[event.key];
  if (to === undefined) return;
  event.preventDefault();
  event.stopPropagation();
  paneWidth.set(layout, to);
}, true);

// ---- A table wider than the screen scrolls inside its wrapper; one with nothing to focus
// in it is focusable itself, so the keyboard can scroll it too (WCAG 2.1.1).
const scrollRegions = () => {
  for (const wrap of document.querySelectorAll(".table-scroll")) {
    const scrolls = wrap.scrollWidth > wrap.clientWidth + 1;
    const focusable = wrap.querySelector("a[href], button:not(:disabled), select:not(:disabled), "
      + "input:not(:disabled):not([type=hidden]), textarea:not(:disabled), [tabindex]:not([tabindex='-1'])");
    if (scrolls && !focusable) {
      wrap.tabIndex = 0;
      wrap.setAttribute("role", "region");
      const caption = wrap.querySelector("caption");
      const heading = wrap.previousElementSibling;
      wrap.setAttribute("aria-label", (caption || heading || wrap).textContent.trim().slice(0, 80) || "Table");
    } else if (wrap.getAttribute("role") === "region") {
      wrap.removeAttribute("tabindex");
      wrap.removeAttribute("role");
      wrap.removeAttribute("aria-label");
    }
  }
};
document.addEventListener("DOMContentLoaded", scrollRegions);
document.body.addEventListener("htmx:afterSettle", scrollRegions);
let scrollRegionsTimer = null;
window.addEventListener("resize", () => {
  clearTimeout(scrollRegionsTimer);
  scrollRegionsTimer = setTimeout(scrollRegions, 150);
});

// ---- @mentions in the comment box: the tenant's members matching what follows the @ ----------
const mentions = {
  typed(box) {
    const match = box.value.slice(0, box.selectionStart).match(/(?:^|[\s(])@([^\s@]{0,60})$/);
    return match ? match[1] : null;
  },
  list: (box) => document.getElementById(box.dataset.mentionsList),
  options: (box) => Array.from(mentions.list(box)?.querySelectorAll("[role=option]") || []),
  hint: (box) => document.getElementById(box.getAttribute("aria-describedby")),
  open: (box) => !!mentions.list(box) && !mentions.list(box).hidden,
  close(box) {
    const list = mentions.list(box);
    if (list) { list.hidden = true; list.innerHTML = ""; }
  },
  highlight(box, index) {
    mentions.options(box).forEach((option, i) => {
      option.setAttribute("aria-selected", i === index ? "true" : "false");
      if (i === index) {
        option.scrollIntoView({ block: "nearest" });
        const hint = mentions.hint(box);
        if (hint) hint.textContent = `${option.textContent.trim()}; Enter inserts, Escape closes.`;
      }
    });
  },
  pick(box, option) {
    const caret = box.selectionStart;
    const before = box.value.slice(0, caret);
    const at = before.lastIndexOf("@");
    const inserted = `@${option.dataset.email} `;
    box.value = before.slice(0, at) + inserted + box.value.slice(caret);
    box.setSelectionRange(at + inserted.length, at + inserted.length);
    mentions.close(box);
    box.focus();
  },
  async show(box, typed) {
    const list = mentions.list(box);
    if (!list) return;
    await htmx.ajax("GET", `${box.dataset.mentionsUrl}?q=${encodeURIComponent(typed)}`,
      { target: list, swap: "innerHTML" });
    if (mentions.typed(box) === null) return;  // typed on past the mention meanwhile
    list.hidden = false;
    const count = mentions.options(box).length;
    const hint = mentions.hint(box);
    if (hint) hint.textContent = count ? `${count} member${count > 1 ? "s" : ""} match; arrow keys choose, Enter inserts.` : "No member matches.";
    if (count) mentions.highlight(box, 0);
  },
};

document.addEventListener("input", (event) => {
  const box = event.target.closest && event.target.closest("textarea[data-mentions-url]");
  if (!box) return;
  const typed = mentions.typed(box);
  clearTimeout(box.mentionTimer);
  if (typed === null) { mentions.close(box); return; }
  box.mentionTimer = setTimeout(() => mentions.show(box, typed), 150);
});

document.addEventListener("keydown", (event) => {
  const box = event.target.closest && event.target.closest("textarea[data-mentions-url]");
  if (!box || !mentions.open(box)) return;
  const options = mentions.options(box);
  const current = options.findIndex((o) => o.getAttribute("aria-selected") === "true");
  if ((event.key === "ArrowDown" || event.key === "ArrowUp") && options.length) {
    event.preventDefault();
    const step = event.key === "ArrowDown" ? 1 : -1;
    mentions.highlight(box, (current + step + options.length) % options.length);
  } else if ((event.key === "Enter" || event.key === "Tab") && options.length && !event.shiftKey) {
    event.preventDefault();
    mentions.pick(box, options[Math.max(0, current)]);
  } else if (event.key === "Escape") {
    event.preventDefault();
    mentions.close(box);
  }
});

document.addEventListener("mousedown", (event) => {
  const option = event.target.closest && event.target.closest(".mention-box [role=option]");
  if (!option) return;
  event.preventDefault();  // the comment box keeps the focus and its caret
  mentions.pick(option.closest(".mention-box").querySelector("textarea"), option);
});

document.addEventListener("focusout", (event) => {
  const box = event.target.closest && event.target.closest("textarea[data-mentions-url]");
  if (box) setTimeout(() => { if (document.activeElement !== box) mentions.close(box); }, 100);
});
