// The CRM's whole interface: every piece of data comes through the JSON
// API, so the page shows exactly what the proxy in front let through, and
// every refusal the proxy answers is shown as it was given.
"use strict";

const PAGE = 100;

async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    return { ok: false, status: 0, data: null, text: "the request failed: " + e.message };
  }
  const text = await resp.text();
  let data = null;
  if ((resp.headers.get("Content-Type") || "").includes("json")) {
    try { data = JSON.parse(text); } catch (e) { data = null; }
  }
  return { ok: resp.ok, status: resp.status, data, text, headers: resp.headers };
}

// describe turns a failed answer into the sentence the page shows. The
// proxy answers {"error","rule","reason"}; the CRM itself {"error"}.
function describe(res) {
  if (res.status === 0) return res.text;
  const d = res.data || {};
  let msg = "Refused (" + res.status + ")";
  if (d.error) msg += ": " + d.error;
  if (d.rule) msg += " [rule " + d.rule + "]";
  if (d.reason) msg += " " + d.reason;
  if (!d.error && !d.reason && res.text) msg += ": " + res.text.slice(0, 300);
  return msg;
}

function showMessage(text, ok) {
  const m = document.getElementById("message");
  m.textContent = text;
  m.className = ok ? "ok" : "";
  m.hidden = false;
  if (!ok && /\((401)\)/.test(text)) {
    const a = document.createElement("a");
    a.href = location.href;
    a.id = "sign-in-again";
    a.textContent = " Sign in again";
    a.addEventListener("click", (e) => { e.preventDefault(); location.reload(); });
    m.appendChild(a);
  }
}

function clearMessage() { document.getElementById("message").hidden = true; }

function cellText(v) {
  if (v === undefined) return null;
  if (v === null) return "null";
  if (Array.isArray(v)) {
    return v.map((x) => (typeof x === "object" && x !== null) ? Object.values(x).join(" ") : String(x)).join("; ");
  }
  if (typeof v === "object") return Object.values(v).join(" ");
  return String(v);
}

// renderTable fills table with one row per record; a field the proxy
// removed is shown as "—".
function renderTable(table, cols, records, onRow) {
  table.textContent = "";
  const head = table.createTHead().insertRow();
  for (const c of cols) {
    const th = document.createElement("th");
    th.textContent = c;
    head.appendChild(th);
  }
  if (onRow) head.appendChild(document.createElement("th"));
  const tb = table.createTBody();
  for (const rec of records) {
    const tr = tb.insertRow();
    tr.dataset.id = rec.id;
    for (const c of cols) {
      const td = tr.insertCell();
      td.className = "col-" + c;
      const t = cellText(rec[c]);
      if (t === null) { td.textContent = "—"; td.classList.add("missing"); } else { td.textContent = t; }
    }
    if (onRow) onRow(tr, rec);
  }
}

const tabs = {};
let customerOffset = 0;
// me is the signed-in user's id (from /api/whoami), for the Claim button.
let me = null;
// POOL_AGE is how long without contact puts a customer in the public pool
// (公海池), as the CRM and the rules count it: 365 days.
const POOL_AGE = 365 * 24 * 3600 * 1000;

function inPool(rec) {
  const t = Date.parse(rec.last_contact_at || "");
  return !Number.isNaN(t) && Date.now() - t > POOL_AGE;
}

// claimCustomer asks to become the owner of a pool customer: the proxy
// allows it only on a pool customer and only with the user's own id.
async function claimCustomer(rec) {
  clearMessage();
  const res = await api("PATCH", "/api/customers/" + encodeURIComponent(rec.id), { owner_id: me });
  if (!res.ok) { showMessage(describe(res)); return; }
  showMessage("You now own customer " + rec.id + ".", true);
  tabs.customers();
}
let dealOffset = 0;

async function loadList(path, table, cols, onRow) {
  clearMessage();
  const res = await api("GET", path);
  if (!res.ok) { showMessage(describe(res)); table.textContent = ""; return null; }
  const list = (res.data && res.data.list) || [];
  renderTable(table, cols, list, onRow);
  table.dataset.loaded = "true";
  return res.data;
}

tabs.customers = async function () {
  const cols = ["id", "name", "company", "phone", "email", "id_card", "bank_account", "owner_id", "team", "stage", "contract_amount", "last_contact_at", "contacts"];
  // The public pool is a view of its own (view=pool): the CRM lists the
  // customers no one has contacted for a year.
  const view = document.getElementById("pool").checked ? "view=pool&" : "";
  const data = await loadList("/api/customers?" + view + "offset=" + customerOffset + "&limit=" + PAGE,
    document.getElementById("customers-table"), cols, (tr, rec) => {
      tr.dataset.owner = rec.owner_id === undefined ? "" : rec.owner_id;
      tr.dataset.team = rec.team === undefined ? "" : rec.team;
      tr.dataset.lastContact = rec.last_contact_at || "";
      const td = tr.insertCell();
      const b = document.createElement("button");
      b.type = "button"; b.textContent = "Open"; b.className = "open-customer";
      b.addEventListener("click", () => openCustomer(rec.id, tr));
      td.appendChild(b);
      if (me && rec.owner_id !== me && inPool(rec)) {
        const c = document.createElement("button");
        c.type = "button"; c.textContent = "Claim"; c.className = "claim-customer";
        c.title = "No contact for a year: take this customer from the public pool";
        c.addEventListener("click", () => claimCustomer(rec));
        td.appendChild(c);
      }
    });
  if (data) {
    const n = (data.list || []).length;
    // The rules remove the CRM's total for users who may not see every
    // record (it would tell how many exist); show it only when it came.
    const info = typeof data.total === "number"
      ? "records " + (customerOffset + 1) + "–" + Math.min(customerOffset + PAGE, data.total) +
        " of the CRM's " + data.total + " (" + n + " shown to you)"
      : "records " + (customerOffset + 1) + "–" + (customerOffset + PAGE) + " (" + n + " shown to you)";
    document.getElementById("page-info").textContent = info;
  }
};

async function openCustomer(id, tr) {
  document.querySelectorAll("#customers-table tr.selected").forEach((x) => x.classList.remove("selected"));
  tr.classList.add("selected");
  const box = document.getElementById("customer-detail");
  box.hidden = false;
  box.textContent = "";
  const res = await api("GET", "/api/customers/" + encodeURIComponent(id));
  if (!res.ok) { box.textContent = describe(res); return; }
  const h = document.createElement("h2");
  h.textContent = "Customer " + id;
  box.appendChild(h);
  const dl = document.createElement("dl");
  for (const [k, v] of Object.entries(res.data)) {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = cellText(v); dd.id = "detail-" + k;
    dl.append(dt, dd);
  }
  box.appendChild(dl);
  const a = document.createElement("a");
  a.href = "/customers/" + encodeURIComponent(id) + "/sensitive";
  a.id = "show-sensitive";
  a.textContent = "Show ID number and bank account (needs a fresh sign-in)";
  box.appendChild(a);
}

tabs.deals = async function () {
  const cols = ["id", "customer_name", "title", "owner_id", "team", "stage", "contract_amount", "expected_close", "next_step", "notes", "updated_by"];
  await loadList("/api/deals?offset=" + dealOffset + "&limit=" + PAGE, document.getElementById("deals-table"), cols, (tr, rec) => {
    const td = tr.insertCell();
    const b = document.createElement("button");
    b.type = "button"; b.textContent = "Edit"; b.className = "edit-deal";
    b.addEventListener("click", () => editDeal(rec));
    td.appendChild(b);
  });
  document.getElementById("deals-page-info").textContent = "from deal " + (dealOffset + 1);
};

const STAGES = ["lead", "qualified", "proposal", "negotiation", "won", "lost"];
let editing = null;

function editDeal(rec) {
  editing = rec;
  const f = document.getElementById("deal-form");
  f.hidden = false;
  document.getElementById("deal-form-id").textContent = rec.id;
  const sel = document.getElementById("deal-stage");
  sel.textContent = "";
  for (const s of STAGES) {
    const o = document.createElement("option");
    o.value = s; o.textContent = s;
    sel.appendChild(o);
  }
  sel.value = rec.stage || "";
  document.getElementById("deal-amount").value = rec.contract_amount === undefined ? "" : rec.contract_amount;
  document.getElementById("deal-next-step").value = rec.next_step || "";
  document.getElementById("deal-notes").value = rec.notes || "";
  const out = document.getElementById("deal-result");
  out.textContent = ""; out.className = "";
}

// saveDeal sends only the fields the user changed, and shows the answer.
async function saveDeal(e) {
  e.preventDefault();
  if (!editing) return;
  const body = {};
  const stage = document.getElementById("deal-stage").value;
  if (stage !== editing.stage) body.stage = stage;
  const amount = document.getElementById("deal-amount").value;
  if (amount !== "" && Number(amount) !== editing.contract_amount) body.contract_amount = Number(amount);
  const next = document.getElementById("deal-next-step").value;
  if (next !== (editing.next_step || "")) body.next_step = next;
  const notes = document.getElementById("deal-notes").value;
  if (notes !== (editing.notes || "")) body.notes = notes;
  const out = document.getElementById("deal-result");
  if (Object.keys(body).length === 0) { out.textContent = "Nothing changed."; out.className = ""; return; }
  const res = await api("PATCH", "/api/deals/" + encodeURIComponent(editing.id), body);
  if (res.ok) {
    out.textContent = "Saved deal " + editing.id + ": " + Object.keys(body).join(", ");
    out.className = "ok";
    editing = res.data;
    tabs.deals();
  } else {
    out.textContent = describe(res);
    out.className = "error";
  }
}

tabs.tickets = () => loadList("/api/tickets?limit=" + PAGE, document.getElementById("tickets-table"),
  ["id", "customer_name", "owner_id", "subject", "status", "priority", "assignee", "created_at", "history"]);
tabs.notes = () => loadList("/api/notes?limit=" + PAGE, document.getElementById("notes-table"),
  ["id", "customer_name", "owner_id", "author", "channel", "at", "text"]);
tabs.payments = () => loadList("/api/payments?limit=" + PAGE, document.getElementById("payments-table"),
  ["id", "customer_name", "invoice_no", "amount", "method", "payer_account", "paid_at", "status", "sales_notes"]);
tabs.invoices = () => loadList("/api/invoices?limit=" + PAGE, document.getElementById("invoices-table"),
  ["id", "invoice_no", "customer_name", "tax_id", "amount", "tax", "issued_at", "status"]);

async function exportCSV() {
  clearMessage();
  const resp = await fetch("/api/customers/export", { credentials: "same-origin", headers: { Accept: "text/csv, application/json" } });
  if (!resp.ok) {
    const text = await resp.text();
    let data = null;
    try { data = JSON.parse(text); } catch (e) { data = null; }
    showMessage(describe({ status: resp.status, data, text }));
    if (data && data.request_approval) {
      // The proxy says where to ask for the approval this export needs.
      const a = document.createElement("a");
      a.href = data.request_approval;
      a.id = "ask-approval";
      a.textContent = " Ask for approval";
      document.getElementById("message").appendChild(a);
    }
    return;
  }
  const blob = await resp.blob();
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = "customers.csv";
  document.body.appendChild(a);
  a.click();
  a.remove();
  showMessage("Export downloaded (" + blob.size + " bytes).", true);
}

function showTab() {
  const name = (location.hash || "#customers").slice(1);
  if (!tabs[name]) return;
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== "tab-" + name;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.tab === name);
  tabs[name]();
}

async function sensitivePage() {
  const id = document.body.dataset.customer;
  const res = await api("GET", "/api/customers/" + encodeURIComponent(id) + "/sensitive");
  if (!res.ok) { showMessage(describe(res)); return; }
  for (const k of ["name", "id_card", "bank_account", "bank_name"]) {
    const v = cellText(res.data[k]);
    document.getElementById("s-" + k).textContent = v === null ? "—" : v;
  }
  document.getElementById("sensitive").dataset.loaded = "true";
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.body.dataset.page === "sensitive") { sensitivePage(); return; }
  document.getElementById("prev").addEventListener("click", () => { customerOffset = Math.max(0, customerOffset - PAGE); tabs.customers(); });
  document.getElementById("next").addEventListener("click", () => { customerOffset += PAGE; tabs.customers(); });
  document.getElementById("pool").addEventListener("change", () => { customerOffset = 0; tabs.customers(); });
  document.getElementById("deals-prev").addEventListener("click", () => { dealOffset = Math.max(0, dealOffset - PAGE); tabs.deals(); });
  document.getElementById("deals-next").addEventListener("click", () => { dealOffset += PAGE; tabs.deals(); });
  document.getElementById("export").addEventListener("click", exportCSV);
  document.getElementById("deal-form").addEventListener("submit", saveDeal);
  document.getElementById("deal-cancel").addEventListener("click", () => { document.getElementById("deal-form").hidden = true; });
  window.addEventListener("hashchange", showTab);
  api("GET", "/api/whoami").then((res) => {
    if (res.ok && res.data) me = res.data.user || null;
    showTab();
  });
});
