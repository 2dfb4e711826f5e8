// The portal: pages for people over the gateway's public JSON API (nothing the API cannot do).
// Every page is built with DOM calls from the API's answers, never from HTML strings, so no text
// of a catalog entry, an objection or an error can become markup.

const TEXT = {
  zh: {
    skip: "跳到正文", brand: "公共数据开放平台", nav: "网站导航", nav_catalog: "数据目录", nav_api: "接口文档",
    footer: "数据经由 kaifang 网关开放", language: "English",
    catalog_title: "数据目录", catalog_lead: "城市各部门开放的公共数据：无条件开放的数据任何人可直接获取，有条件开放的数据经申请和协议后使用。",
    search: "搜索", search_label: "关键词", any: "全部", owner: "数据提供部门", open_type: "开放类型", format: "格式",
    update_frequency: "更新频率", results: (n) => `共 ${n} 个数据集`, no_results: "没有符合条件的数据集。",
    previous: "上一页", next: "下一页", page_of: (p, n) => `第 ${p} / ${n} 页`,
    unconditional: "无条件开放", conditional: "有条件开放",
    csv: "CSV", ndjson: "NDJSON", parquet: "Parquet", arrow_ipc: "Arrow IPC",
    realtime: "实时", hourly: "每小时", daily: "每日", weekly: "每周", monthly: "每月", quarterly: "每季度", yearly: "每年", irregular: "不定期",
    stale: "未按时更新", stale_title: "最后更新时间已超过声明的更新周期",
    last_updated: "最后更新", version: "版本", license: "许可", keywords: "关键词", open_objections: "未处理的异议",
    not_found_title: "未找到", not_found: "没有这个数据集，或者它不对外开放。", back: "返回数据目录",
    fields: "字段", field: "字段名", type: "类型", description: "说明", sensitivity: "敏感程度",
    public: "公开", internal: "内部", personal: "个人信息",
    preview: "数据预览", preview_lead: (n) => `前 ${n} 行，与接口返回一致。`, preview_none: "没有数据行。",
    preview_conditional: "有条件开放的数据需要协议：输入已获协议的密钥后可在协议范围内预览（敏感字段按协议脱敏）。",
    preview_scope: "你的协议范围内的数据，敏感字段已按协议脱敏。",
    downloads: "下载", original: (f) => `原始文件（${f}）`,
    downloads_conditional: "有条件开放的数据按协议通过接口获取，请求需携带密钥（见下方示例）。",
    snippets: "代码示例", copy: "复制", copied: "已复制",
    objection_title: "数据异议", objection_lead: "发现数据错误或遗漏？提交异议，数据提供部门会答复。",
    objection_description: "问题描述", objection_contact: "联系方式（匿名提交时必填）", objection_submit: "提交异议",
    objection_filed: (id) => `异议已提交，编号 ${id}。`,
    api_title: "接口文档", api_lead: "数据接口的 OpenAPI 文档，按类别列出每个接口、参数和返回。", api_document: "OpenAPI 文档（JSON）",
    parameters: "参数", responses: "返回", required: "必填", location: "位置",
    error: "出错了", loading: "加载中…",
    nav_account: "我的账户", account_title: "我的账户",
    key_lead: "输入平台发给你的 API 密钥。密钥只保存在本浏览器标签页中（关闭标签页即清除），随每次请求以 Authorization 头发送。",
    key_label: "API 密钥", key_submit: "使用此密钥", key_forget: "清除密钥",
    signed_in: (name, role) => `当前身份：${name}（${role}）`,
    role_user: "数据使用方", role_owner: "数据提供部门", role_operator: "平台运营方",
    my_applications: "我的申请", owner_applications: "本部门数据的申请", no_applications: "没有申请。",
    my_agreements: "我的协议", owner_agreements: "本部门数据的协议", no_agreements: "没有协议。",
    id: "编号", dataset: "数据集", status: "状态", applicant: "申请方", submitted_at: "提交时间", due_by: "答复期限",
    overdue: "已逾期", provisional: "暂定（按法定节假日计算）", reason: "理由", purpose: "用途", scenario: "使用场景",
    security_measures: "安全措施", actions: "处理",
    submitted: "待答复", approved: "已批准", rejected: "已驳回",
    active: "有效", suspended: "已暂停", revoked: "已撤销", expired: "已过期",
    valid: "有效期", columns: "字段", row_filter: "行范围", masks: "脱敏", rate: "速率", quota: "每日配额", holder: "持有方",
    all_rows: "全部行", no_masks: "无", used_today: (day) => `今日已用（${day}）`,
    rate_text: (p, b) => `每秒 ${p} 次，突发 ${b} 次`,
    quota_text: (r, rows, bytes) => `${r} 次请求，${rows} 行，${bytes} 字节`,
    feedback_label: "使用情况反馈（按规定说明数据的使用情况）", feedback_submit: "提交反馈", feedback_sent: "反馈已提交。",
    suspend: "暂停", resume: "恢复", revoke: "撤销",
    apply_title: "申请使用", apply_lead: "说明用途、使用场景和安全措施，并选择需要的字段。数据提供部门在 10 个工作日内答复；批准后形成协议，按协议范围和脱敏规则提供数据，每次访问都会记录。",
    apply_needs_key: "申请需要密钥：请先在“我的账户”中输入平台发给你的密钥。", apply_columns: "需要的字段",
    apply_submit: "提交申请", applied: (id, due) => `申请已提交，编号 ${id}，答复期限 ${due}。`,
    approve: "批准", approve_summary: "批准并确定协议条款", reject: "驳回", reject_summary: "驳回并说明理由",
    valid_until: "有效期至", per_second: "每秒请求数", burst: "突发请求数", requests_per_day: "每日请求数",
    rows_per_day: "每日行数", bytes_per_day: "每日字节数", mask_for: (c) => `${c} 的脱敏规则`, mask_none: "不脱敏",
    row_filter_hint: "例如 district = 'Haizhou'；留空为全部行",
    owner_objections: "数据异议", no_objections: "没有异议。", contact: "联系方式", filed_at: "提交时间",
    response: "答复", resolve: "答复并关闭", open: "待处理", resolved: "已答复",
    your_datasets: "本部门的数据集", all_datasets: "数据集", withdraw: "下架", withdraw_summary: "立即下架并说明理由",
    withdrawn_title: "已下架的数据集", reopen: "重新开放", withdrawn_at: "下架时间", no_withdrawn: "没有下架的数据集。",
    drafts_title: "待发布的目录草稿", no_drafts: "没有草稿。", draft_version: "草稿修订", written_by: "编写者",
    written_at: "编写时间", edit_draft: "编辑草稿（JSON）", save_draft: "保存草稿", publish: "审核通过并发布",
    new_draft: "新建或修改目录条目", new_draft_lead: "草稿经平台运营方审核发布后才对外提供；源文件须放在本部门的文件夹中。",
    draft_id: "数据集编号", draft_entry: "目录条目（JSON）", bad_json: "目录条目不是有效的 JSON",
    report_title: "举报滥用", report_lead: "发现有人违规使用本数据？告诉平台运营方。", report_description: "情况说明",
    report_contact: "联系方式（匿名举报时必填）", report_submit: "提交举报", report_filed: (id) => `举报已提交，编号 ${id}。`,
  },
  en: {
    skip: "Skip to content", brand: "Public Data Open Platform", nav: "Site", nav_catalog: "Catalog", nav_api: "API",
    footer: "Data opened through the kaifang gateway", language: "中文",
    catalog_title: "Data catalog", catalog_lead: "Public data opened by the city's departments: unconditionally open data is for anyone to take; conditionally open data is used under an approved application and its agreement.",
    search: "Search", search_label: "Keywords", any: "Any", owner: "Department", open_type: "Open type", format: "Format",
    update_frequency: "Update frequency", results: (n) => `${n} dataset${n === 1 ? "" : "s"}`, no_results: "No dataset matches.",
    previous: "Previous", next: "Next", page_of: (p, n) => `Page ${p} of ${n}`,
    unconditional: "Unconditionally open", conditional: "Conditionally open",
    csv: "CSV", ndjson: "NDJSON", parquet: "Parquet", arrow_ipc: "Arrow IPC",
    realtime: "Real time", hourly: "Hourly", daily: "Daily", weekly: "Weekly", monthly: "Monthly", quarterly: "Quarterly", yearly: "Yearly", irregular: "Irregular",
    stale: "Not updated as declared", stale_title: "The last update is older than the declared update frequency",
    last_updated: "Last updated", version: "Version", license: "License", keywords: "Keywords", open_objections: "Open objections",
    not_found_title: "Not found", not_found: "There is no such dataset, or it is not open.", back: "Back to the catalog",
    fields: "Fields", field: "Field", type: "Type", description: "Description", sensitivity: "Sensitivity",
    public: "Public", internal: "Internal", personal: "Personal",
    preview: "Preview", preview_lead: (n) => `The first ${n} rows, as the API answers them.`, preview_none: "No rows.",
    preview_conditional: "Conditionally open data needs an agreement: with the key of an approved agreement, the preview shows the rows within its scope (sensitive fields masked as agreed).",
    preview_scope: "The rows within your agreement's scope, sensitive fields masked as agreed.",
    downloads: "Downloads", original: (f) => `Original file (${f})`,
    downloads_conditional: "Conditionally open data is read through the API under an agreement, each call with its key (see the examples below).",
    snippets: "Code", copy: "Copy", copied: "Copied",
    objection_title: "Objections", objection_lead: "Found an error or omission? File an objection and the department answers it.",
    objection_description: "What is wrong", objection_contact: "Contact (required when anonymous)", objection_submit: "File objection",
    objection_filed: (id) => `Objection filed: ${id}.`,
    api_title: "API", api_lead: "The data API's OpenAPI document: every operation by category, with its parameters and answers.", api_document: "OpenAPI document (JSON)",
    parameters: "Parameters", responses: "Answers", required: "required", location: "In",
    error: "Something went wrong", loading: "Loading…",
    nav_account: "My account", account_title: "My account",
    key_lead: "Enter the API key the platform issued you. It is kept in this browser tab only (gone when the tab closes) and sent with each request as the Authorization header.",
    key_label: "API key", key_submit: "Use this key", key_forget: "Forget the key",
    signed_in: (name, role) => `Using the key of ${name} (${role})`,
    role_user: "data user", role_owner: "data owner", role_operator: "operator",
    my_applications: "My applications", owner_applications: "Applications for your datasets", no_applications: "No applications.",
    my_agreements: "My agreements", owner_agreements: "Agreements on your datasets", no_agreements: "No agreements.",
    id: "Id", dataset: "Dataset", status: "Status", applicant: "Applicant", submitted_at: "Submitted", due_by: "Answer due by",
    overdue: "Overdue", provisional: "provisional (statutory holidays only)", reason: "Reason", purpose: "Purpose", scenario: "Scenario",
    security_measures: "Security measures", actions: "Answer",
    submitted: "Awaiting an answer", approved: "Approved", rejected: "Rejected",
    active: "Active", suspended: "Suspended", revoked: "Revoked", expired: "Expired",
    valid: "Valid", columns: "Columns", row_filter: "Rows", masks: "Masks", rate: "Rate", quota: "Daily quota", holder: "Holder",
    all_rows: "all rows", no_masks: "none", used_today: (day) => `Used today (${day})`,
    rate_text: (p, b) => `${p} per second, bursts of ${b}`,
    quota_text: (r, rows, bytes) => `${r} requests, ${rows} rows, ${bytes} bytes`,
    feedback_label: "How you used the data (the regulation asks holders to report it)", feedback_submit: "Send feedback", feedback_sent: "Feedback sent.",
    suspend: "Suspend", resume: "Resume", revoke: "Revoke",
    apply_title: "Apply", apply_lead: "Say what the data is for, where and how it will be used and how it will be kept safe, and choose the fields. The department answers within 10 working days; an approval becomes an agreement under which the data is served within its scope and masks, every access recorded.",
    apply_needs_key: "Applying needs a key: enter the key the platform issued you on My account first.", apply_columns: "Fields wanted",
    apply_submit: "Apply", applied: (id, due) => `Application ${id} submitted; the answer is due by ${due}.`,
    approve: "Approve", approve_summary: "Approve, with the agreement's terms", reject: "Reject", reject_summary: "Reject, with the reason",
    valid_until: "Valid until", per_second: "Requests per second", burst: "Burst", requests_per_day: "Requests per day",
    rows_per_day: "Rows per day", bytes_per_day: "Bytes per day", mask_for: (c) => `Mask of ${c}`, mask_none: "No mask",
    row_filter_hint: "e.g. district = 'Haizhou'; empty for all rows",
    owner_objections: "Objections", no_objections: "No objections.", contact: "Contact", filed_at: "Filed",
    response: "Answer", resolve: "Answer and close", open: "Open", resolved: "Answered",
    your_datasets: "Your datasets", all_datasets: "Datasets", withdraw: "Withdraw", withdraw_summary: "Withdraw at once, with the reason",
    withdrawn_title: "Withdrawn datasets", reopen: "Reopen", withdrawn_at: "Withdrawn", no_withdrawn: "No dataset is withdrawn.",
    drafts_title: "Drafts awaiting publication", no_drafts: "No drafts.", draft_version: "Revision", written_by: "Written by",
    written_at: "Written", edit_draft: "Edit the draft (JSON)", save_draft: "Save the draft", publish: "Publish (reviewed)",
    new_draft: "A new entry, or a change to one", new_draft_lead: "A draft is served only once the operators review and publish it; its source file must lie in your department's folder.",
    draft_id: "Dataset id", draft_entry: "Catalog entry (JSON)", bad_json: "The catalog entry is not valid JSON",
    report_title: "Report misuse", report_lead: "Seen this data misused? Tell the platform's operators.", report_description: "What happened",
    report_contact: "Contact (required when anonymous)", report_submit: "Send report", report_filed: (id) => `Report ${id} received.`,
  },
};

const LANGUAGE_KEY = "kaifang.language";
let language = localStorage.getItem(LANGUAGE_KEY) === "en" ? "en" : "zh";

function t(key, ...args) {
  const value = TEXT[language][key] ?? TEXT.en[key] ?? key;
  return typeof value === "function" ? value(...args) : value;
}

// h("a", {href: "/"}, "text", child, ...): an element; attributes starting with "on" are
// listeners; strings become text nodes.
function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

function meta(name) {
  return document.querySelector(`meta[name="${name}"]`)?.content ?? "";
}

// Dates in the platform's time zone (a whole number of hours from UTC).
function timeZone() {
  const hours = Number.parseInt(meta("kaifang-utc-offset"), 10) || 0;
  if (hours === 0) return "UTC";
  return `Etc/GMT${hours > 0 ? "-" : "+"}${Math.abs(hours)}`;
}

function formatTime(value) {
  const format = new Intl.DateTimeFormat(language === "zh" ? "zh-CN" : "en-GB", {
    dateStyle: "medium", timeStyle: "short", timeZone: timeZone(),
  });
  return format.format(new Date(value));
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// The user's API key: entered once on the account page, kept in this tab's sessionStorage and
// sent as Authorization (no cookies, so there is nothing for another site to ride on).
const KEY_STORAGE = "kaifang.key";

function storedKey() {
  return sessionStorage.getItem(KEY_STORAGE) ?? "";
}

// `options.anonymous`: without the key, as the public sees it.
async function api(path, options = {}) {
  const key = options.anonymous ? "" : storedKey();
  const headers = { Accept: "application/json", ...(key ? { Authorization: `Bearer ${key}` } : {}), ...(options.headers ?? {}) };
  const response = await fetch(path, { ...options, headers });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(response.status, body?.error?.code ?? "error", body?.error?.message ?? response.statusText);
  }
  return body;
}

function errorBox(error) {
  return h("div", { class: "error", role: "alert" }, h("strong", {}, t("error"), ": "), error.message, error.code ? ` (${error.code})` : "");
}

function badge(kind, text, title) {
  return h("span", { class: `badge ${kind}`, title }, text);
}

function openTypeBadge(openType) {
  return badge(openType, t(openType));
}

function setTitle(title) {
  document.title = `${title} · ${t("brand")}`;
}

// The catalog: search, facets, paging.
const FACETS = ["owner", "open_type", "format", "update_frequency"];
const PER_PAGE = 10;

async function catalogPage(main) {
  const params = new URLSearchParams(location.search);
  setTitle(t("catalog_title"));
  main.append(h("h1", {}, t("catalog_title")), h("p", { class: "lead" }, t("catalog_lead")));
  const query = new URLSearchParams();
  for (const name of ["q", ...FACETS]) {
    if (params.get(name)) query.set(name, params.get(name));
  }
  const page = Math.max(1, Number.parseInt(params.get("page") ?? "1", 10) || 1);
  query.set("page", page);
  query.set("per_page", PER_PAGE);
  let answer;
  try {
    answer = await api(`/v1/catalog?${query}`);
  } catch (error) {
    main.append(errorBox(error));
    return;
  }
  const form = h("form", { class: "search", role: "search", action: "/", method: "get" },
    h("label", { class: "text" }, t("search_label"),
      h("input", { type: "search", name: "q", value: params.get("q") ?? "" })),
    FACETS.map((facet) => h("label", {}, t(facet),
      h("select", { name: facet },
        h("option", { value: "" }, t("any")),
        (answer.facets?.[facet] ?? []).map(({ value, count }) =>
          h("option", { value, selected: params.get(facet) === value }, `${facet === "owner" ? value : t(value)} (${count})`))))),
    h("button", { type: "submit", class: "primary" }, t("search")));
  main.append(form);
  main.append(h("p", { "aria-live": "polite" }, t("results", answer.total)));
  if (answer.datasets.length === 0) {
    main.append(h("p", { class: "empty" }, t("no_results")));
    return;
  }
  main.append(h("ul", { class: "results" }, answer.datasets.map((d) =>
    h("li", { class: "card", "data-dataset": d.id },
      h("h2", {}, h("a", { href: `/datasets/${encodeURIComponent(d.id)}` }, d.title)),
      h("p", {}, d.description),
      h("ul", { class: "meta" },
        h("li", {}, openTypeBadge(d.open_type)),
        d.stale ? h("li", {}, badge("stale", t("stale"), t("stale_title"))) : null,
        h("li", {}, d.owner),
        h("li", {}, t(d.format)),
        h("li", {}, `${t("update_frequency")}: ${t(d.update_frequency)}`),
        h("li", {}, `${t("last_updated")}: `, h("time", { datetime: d.last_updated }, formatTime(d.last_updated))))))));
  const pages = Math.max(1, Math.ceil(answer.total / PER_PAGE));
  if (pages > 1) {
    const link = (to, label) => {
      const next = new URLSearchParams(params);
      next.set("page", to);
      return h("a", { href: `/?${next}` }, label);
    };
    main.append(h("nav", { class: "pager", "aria-label": t("page_of", page, pages) },
      page > 1 ? link(page - 1, t("previous")) : null,
      h("span", {}, t("page_of", page, pages)),
      page < pages ? link(page + 1, t("next")) : null));
  }
}

// A dataset's page: metadata, fields, preview, downloads, code, objections.
async function datasetPage(main, id) {
  let dataset;
  try {
    dataset = await api(`/v1/datasets/${encodeURIComponent(id)}`);
  } catch (error) {
    if (error.status === 404) return notFound(main);
    main.append(errorBox(error));
    return;
  }
  setTitle(dataset.title);
  main.append(
    h("h1", {}, dataset.title),
    h("p", { class: "lead" }, dataset.description),
    h("dl", { class: "facts" },
      fact(t("owner"), dataset.owner),
      fact(t("open_type"), openTypeBadge(dataset.open_type)),
      fact(t("format"), `${t(dataset.format)} (${dataset.media_type})`),
      fact(t("update_frequency"), t(dataset.update_frequency), dataset.stale ? [" ", badge("stale", t("stale"), t("stale_title"))] : null),
      fact(t("last_updated"), h("time", { datetime: dataset.last_updated }, formatTime(dataset.last_updated))),
      fact(t("version"), String(dataset.version)),
      fact(t("license"), dataset.license),
      dataset.keywords.length ? fact(t("keywords"), dataset.keywords.join(", ")) : null,
      fact(t("open_objections"), String(dataset.open_objections))),
    h("h2", {}, t("fields")),
    h("div", { class: "scroll", tabindex: "0", role: "region", "aria-label": t("fields") }, h("table", {},
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, t("field")), h("th", { scope: "col" }, t("type")),
        h("th", { scope: "col" }, t("description")), h("th", { scope: "col" }, t("sensitivity")))),
      h("tbody", {}, dataset.fields.map((f) => h("tr", { "data-field": f.name },
        h("td", {}, h("code", {}, f.name)), h("td", {}, f.type), h("td", { class: "wrap" }, f.description),
        h("td", {}, f.sensitivity === "public" ? t("public") : badge(f.sensitivity, t(f.sensitivity)))))))));
  const preview = h("section", { "aria-labelledby": "preview-heading" }, h("h2", { id: "preview-heading" }, t("preview")));
  main.append(preview);
  if (dataset.open_type === "conditional" && !storedKey()) {
    preview.append(h("p", { class: "notice" }, t("preview_conditional")));
  } else {
    // With a key, a conditional dataset's preview is what the key's agreement gives.
    if (dataset.open_type === "conditional") preview.append(h("p", {}, t("preview_scope")));
    await previewTable(preview, dataset);
  }
  main.append(downloads(dataset), snippets(dataset));
  if (dataset.open_type === "conditional") {
    // A holder's metadata is its agreement's scope; an application may ask for any field.
    let fields = dataset.fields;
    if (storedKey()) {
      try {
        fields = (await api(`/v1/datasets/${encodeURIComponent(id)}`, { anonymous: true })).fields;
      } catch (error) {
        main.append(errorBox(error));
      }
    }
    main.append(applyForm(dataset, fields));
  }
  main.append(objectionForm(dataset), reportForm(dataset));
}

// A misuse report on a dataset, to the operators.
function reportForm(dataset) {
  return filingForm("report", t("report_title"), t("report_lead"), t("report_description"), t("report_contact"),
    t("report_submit"), 10000, async (body) => {
      const receipt = await postJson("/v1/reports", { dataset: dataset.id, ...body });
      return h("span", { "data-report": receipt.id }, t("report_filed", receipt.id));
    });
}

function postJson(path, body) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

// A form whose submission posts to the API and shows the answer (or the refusal) below it.
function submitted(form, status, send) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    status.replaceChildren();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const shown = await send(new FormData(form));
      if (shown) status.append(shown);
    } catch (error) {
      status.append(errorBox(error));
    } finally {
      button.disabled = false;
    }
  });
}

function dueDate(application) {
  return application.due_by + (application.due_by_provisional ? ` (${t("provisional")})` : "");
}

// A conditional dataset's application: purpose, scenario, security measures and fields.
function applyForm(dataset, fields) {
  const section = h("section", { "aria-labelledby": "apply-heading" }, h("h2", { id: "apply-heading" }, t("apply_title")),
    h("p", {}, t("apply_lead")));
  if (!storedKey()) {
    section.append(h("p", { class: "notice" }, t("apply_needs_key"), " ", h("a", { href: "/account" }, t("nav_account"))));
    return section;
  }
  const status = h("p", { "aria-live": "polite" });
  const text = (name) => h("label", { class: "text" }, t(name), h("textarea", { name, rows: 2, required: true, maxlength: 4000 }));
  const form = h("form", { class: "search", id: "apply" }, text("purpose"), text("scenario"), text("security_measures"),
    h("fieldset", {}, h("legend", {}, t("apply_columns")),
      fields.map((f) => h("label", { class: "check" },
        h("input", { type: "checkbox", name: "columns", value: f.name }), " ", h("code", {}, f.name),
        f.sensitivity === "public" ? null : [" ", badge(f.sensitivity, t(f.sensitivity))]))),
    h("button", { type: "submit", class: "primary" }, t("apply_submit")));
  submitted(form, status, async (data) => {
    const application = await postJson("/v1/applications", {
      dataset: dataset.id, purpose: data.get("purpose"), scenario: data.get("scenario"),
      security_measures: data.get("security_measures"), columns: data.getAll("columns"),
    });
    form.reset();
    return h("span", { "data-application": application.id }, t("applied", application.id, dueDate(application)));
  });
  section.append(form, status);
  return section;
}

function fact(term, ...definition) {
  return [h("dt", {}, term), h("dd", {}, ...definition)];
}

async function previewTable(section, dataset) {
  let preview;
  try {
    preview = await api(dataset.links.preview);
  } catch (error) {
    section.append(errorBox(error));
    return;
  }
  const { columns, rows } = preview;
  if (rows.length === 0) {
    section.append(h("p", { class: "empty" }, t("preview_none")));
    return;
  }
  section.append(h("p", {}, t("preview_lead", rows.length)),
    h("div", { class: "scroll", tabindex: "0", role: "region", "aria-labelledby": "preview-heading" },
      h("table", { id: "preview" },
        h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, rows.map((row) => h("tr", {}, columns.map((c) => h("td", {}, row[c] === null ? "" : String(row[c])))))))));
}

function downloads(dataset) {
  const section = h("section", {}, h("h2", {}, t("downloads")));
  if (dataset.open_type === "conditional") {
    section.append(h("p", {}, t("downloads_conditional")));
    return section;
  }
  const base = dataset.links.self;
  section.append(h("ul", { class: "downloads" },
    h("li", {}, h("a", { href: dataset.links.download, download: "" }, t("original", t(dataset.format)))),
    [["csv", "CSV"], ["json", "JSON"], ["ndjson", "NDJSON"], ["arrow", "Arrow IPC"]].map(([suffix, label]) =>
      h("li", {}, h("a", { href: `${base}/rows.${suffix}`, download: "" }, label)))));
  return section;
}

function snippetSources(dataset) {
  const origin = location.origin;
  const rows = `${origin}${dataset.links.self}/rows`;
  // The Flight service is on this host, at the port the gateway gives.
  const flight = `${meta("kaifang-flight-scheme") || "grpc"}://${location.hostname}:${meta("kaifang-flight-port") || 8815}`;
  const keyed = dataset.open_type === "conditional";
  const id = dataset.id;
  const header = keyed ? ` -H "Authorization: Bearer $KAIFANG_KEY"` : "";
  const pyHeaders = keyed ? `, storage_options={"Authorization": "Bearer " + key}` : "";
  const keyLine = keyed ? `import os\nkey = os.environ["KAIFANG_KEY"]\n` : "";
  return [
    ["curl", `curl${header} '${rows}.csv?limit=10'`],
    ["pandas", `${keyLine}import pandas as pd\ndf = pd.read_csv("${rows}.csv"${pyHeaders})`],
    ["polars", keyed
      ? `${keyLine}import urllib.request\nimport polars as pl\nrequest = urllib.request.Request("${rows}.csv", headers={"Authorization": f"Bearer {key}"})\ndf = pl.read_csv(urllib.request.urlopen(request).read())`
      : `import polars as pl\ndf = pl.read_csv("${rows}.csv")`],
    ["DuckDB", keyed
      ? `INSTALL httpfs; LOAD httpfs;\nCREATE SECRET kaifang (TYPE http, EXTRA_HTTP_HEADERS MAP {'Authorization': 'Bearer ' || getenv('KAIFANG_KEY')});\nSELECT * FROM read_csv('${rows}.csv') LIMIT 10;`
      : `INSTALL httpfs; LOAD httpfs;\nSELECT * FROM read_csv('${rows}.csv') LIMIT 10;`],
    ["pyarrow.flight", `${keyLine}import pyarrow.flight as flight\nclient = flight.FlightClient("${flight}")\n` +
      (keyed ? `options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {key}".encode())])\n` : "") +
      `info = client.get_flight_info(flight.FlightDescriptor.for_path("${id}")${keyed ? ", options" : ""})\n` +
      `table = client.do_get(info.endpoints[0].ticket${keyed ? ", options" : ""}).read_all()`],
    ["ADBC", `${keyLine}import adbc_driver_flightsql.dbapi as flightsql\n` +
      (keyed
        ? `conn = flightsql.connect("${flight}", db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {key}"}, autocommit=True)\n`
        : `conn = flightsql.connect("${flight}", autocommit=True)\n`) +
      `cur = conn.cursor()\ncur.execute('SELECT * FROM "${id}" LIMIT 10')\ntable = cur.fetch_arrow_table()`],
  ];
}

function snippets(dataset) {
  const sources = snippetSources(dataset);
  const code = h("code", {});
  const panel = h("div", { role: "tabpanel", id: "snippet-panel" }, h("pre", { tabindex: "0" }, code));
  const copy = h("button", { type: "button", class: "primary copy" }, t("copy"));
  const buttons = sources.map(([name, source], i) => h("button", {
    type: "button", role: "tab", id: `snippet-${i}`, "aria-controls": "snippet-panel", "data-snippet": name,
    onclick: () => show(i),
  }, name));
  function show(index) {
    buttons.forEach((b, i) => {
      b.setAttribute("aria-selected", String(i === index));
      b.tabIndex = i === index ? 0 : -1;
    });
    panel.setAttribute("aria-labelledby", buttons[index].id);
    code.textContent = sources[index][1];
  }
  copy.addEventListener("click", async () => {
    await navigator.clipboard?.writeText(code.textContent).catch(() => {});
    copy.textContent = t("copied");
    setTimeout(() => { copy.textContent = t("copy"); }, 1500);
  });
  show(0);
  return h("section", {}, h("h2", {}, t("snippets")), h("div", { class: "tabs", role: "tablist", "aria-label": t("snippets") }, buttons), panel, copy);
}

function objectionForm(dataset) {
  return filingForm("objection", t("objection_title"), t("objection_lead"), t("objection_description"),
    t("objection_contact"), t("objection_submit"), 2000, async (body) => {
      const filed = await postJson(`${dataset.links.self}/objections`, body);
      return h("span", { "data-objection": filed.id }, t("objection_filed", filed.id));
    });
}

// A form of a dataset's page anyone files (an objection, a misuse report): what is wrong and a
// contact (required of anonymous filers, as the API says when it is missing); `send` posts
// `{description, contact}` and gives what to show of the receipt.
function filingForm(id, title, lead, describe, contact, submit, maxlength, send) {
  const status = h("p", { "aria-live": "polite" });
  const form = h("form", { class: "search", id },
    h("label", { class: "text" }, describe, h("textarea", { name: "description", rows: 3, required: true, maxlength })),
    h("label", { class: "text" }, contact, h("input", { type: "text", name: "contact", maxlength: 200 })),
    h("button", { type: "submit", class: "primary" }, submit));
  submitted(form, status, async (data) => {
    const body = { description: data.get("description") };
    if (data.get("contact")) body.contact = data.get("contact");
    const shown = await send(body);
    form.reset();
    return shown;
  });
  return h("section", {}, h("h2", {}, title), h("p", {}, lead), form, status);
}

// A button that asks the API for `run` and shows the page again, or the refusal in `status`.
function actionButton(action, label, primary, status, run) {
  return h("button", {
    type: "button", class: primary ? "primary" : "secondary", "data-action": action,
    onclick: async () => {
      try {
        await run();
        await render();
      } catch (error) {
        status.replaceChildren(errorBox(error));
      }
    },
  }, label);
}

// The account page: the key, then the applications and agreements it may see (a user's own;
// an owner's on its datasets, with the answers to give).
async function accountPage(main) {
  setTitle(t("account_title"));
  main.append(h("h1", {}, t("account_title")));
  if (!storedKey()) {
    const form = h("form", { class: "search", id: "key" },
      h("label", { class: "text" }, t("key_label"),
        h("input", { type: "password", name: "key", required: true, autocomplete: "off", spellcheck: "false" })),
      h("button", { type: "submit", class: "primary" }, t("key_submit")));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(KEY_STORAGE, new FormData(form).get("key").trim());
      render();
    });
    main.append(h("p", { class: "lead" }, t("key_lead")), form);
    return;
  }
  const forget = h("button", { type: "button", id: "forget", class: "secondary" }, t("key_forget"));
  forget.addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    render();
  });
  let me;
  try {
    me = await api("/v1/me");
  } catch (error) {
    main.append(errorBox(error), forget);
    return;
  }
  main.append(h("p", { "data-principal": me.id }, t("signed_in", me.name, t(`role_${me.role}`)), " ", forget));
  // Owners and operators answer for datasets: theirs (an owner's department's) or all.
  const owner = me.role !== "user";
  const reads = [api("/v1/applications"), api("/v1/agreements")];
  if (owner) {
    const catalog = me.role === "owner" ? `/v1/catalog?per_page=100&owner=${encodeURIComponent(me.department ?? "")}` : "/v1/catalog?per_page=100";
    reads.push(api("/v1/objections"), api(catalog), api("/v1/withdrawals"), api("/v1/drafts"));
  }
  let answers;
  try {
    answers = await Promise.all(reads);
  } catch (error) {
    main.append(errorBox(error));
    return;
  }
  const [{ applications }, { agreements }, objections, catalog, withdrawals, drafts] = answers;
  main.append(applicationsSection(applications, owner), agreementsSection(agreements, owner));
  if (owner) {
    main.append(objectionsSection(objections.objections), datasetsSection(catalog.datasets, me.role === "owner"),
      withdrawnSection(withdrawals.withdrawals), draftsSection(drafts.drafts, me.role === "operator"), newDraftForm());
  }
}

// An owner's objections: open ones first, each answered and closed with a response.
function objectionsSection(objections) {
  const sorted = [...objections].sort((a, b) => (a.status === "open") === (b.status === "open")
    ? b.filed_at.localeCompare(a.filed_at) : a.status === "open" ? -1 : 1);
  const section = h("section", { "aria-labelledby": "objections-heading" }, h("h2", { id: "objections-heading" }, t("owner_objections")));
  if (sorted.length === 0) {
    section.append(h("p", { class: "empty" }, t("no_objections")));
    return section;
  }
  section.append(h("ul", { class: "results" }, sorted.map((o) => {
    const status = h("p", { "aria-live": "polite" });
    const form = o.status === "open" ? h("form", { class: "search resolve" },
      h("label", { class: "text" }, t("response"), h("textarea", { name: "response", rows: 2, required: true, maxlength: 4000 })),
      h("button", { type: "submit", class: "primary" }, t("resolve"))) : null;
    if (form) {
      submitted(form, status, async (data) => {
        await postJson(`/v1/objections/${encodeURIComponent(o.id)}/resolve`, { response: data.get("response") });
        await render();
      });
    }
    return h("li", { class: "card", "data-objection": o.id },
      h("h3", {}, h("a", { href: `/datasets/${encodeURIComponent(o.dataset)}` }, o.dataset), " ",
        badge(o.status === "open" ? "pending" : "approved", t(o.status))),
      h("dl", { class: "facts" },
        fact(t("id"), h("code", {}, o.id)),
        fact(t("filed_at"), h("time", { datetime: o.filed_at }, formatTime(o.filed_at))),
        fact(t("objection_description"), o.description),
        o.contact ? fact(t("contact"), o.contact) : null,
        o.response ? fact(t("response"), o.response) : null),
      form, status);
  })));
  return section;
}

// The datasets an owner answers for, each withdrawn at once with a reason.
function datasetsSection(datasets, own) {
  const section = h("section", { "aria-labelledby": "datasets-heading" }, h("h2", { id: "datasets-heading" }, t(own ? "your_datasets" : "all_datasets")));
  section.append(h("ul", { class: "results" }, datasets.map((d) => {
    const status = h("p", { "aria-live": "polite" });
    const form = h("form", { class: "search withdraw" },
      h("label", { class: "text" }, t("reason"), h("textarea", { name: "reason", rows: 2, required: true, maxlength: 4000 })),
      h("button", { type: "submit", class: "secondary" }, t("withdraw")));
    submitted(form, status, async (data) => {
      await postJson(`/v1/datasets/${encodeURIComponent(d.id)}/withdraw`, { reason: data.get("reason") });
      await render();
    });
    return h("li", { class: "card", "data-dataset": d.id },
      h("h3", {}, h("a", { href: `/datasets/${encodeURIComponent(d.id)}` }, d.title), " ", openTypeBadge(d.open_type)),
      h("div", { class: "decide" }, h("details", {}, h("summary", {}, t("withdraw_summary")), form), status));
  })));
  return section;
}

// Datasets withdrawn now, each reopened when it may be served again.
function withdrawnSection(withdrawals) {
  const current = withdrawals.filter((w) => !w.reopened_at);
  const section = h("section", { "aria-labelledby": "withdrawn-heading" }, h("h2", { id: "withdrawn-heading" }, t("withdrawn_title")));
  if (current.length === 0) {
    section.append(h("p", { class: "empty" }, t("no_withdrawn")));
    return section;
  }
  section.append(h("ul", { class: "results" }, current.map((w) => {
    const status = h("p", { "aria-live": "polite" });
    return h("li", { class: "card", "data-withdrawn": w.dataset },
      h("h3", {}, h("code", {}, w.dataset)),
      h("dl", { class: "facts" },
        fact(t("withdrawn_at"), h("time", { datetime: w.withdrawn_at }, formatTime(w.withdrawn_at))),
        fact(t("reason"), w.reason)),
      h("div", { class: "actions" }, actionButton("reopen", t("reopen"), false, status,
        () => api(`/v1/datasets/${encodeURIComponent(w.dataset)}/reopen`, { method: "POST" })), status));
  })));
  return section;
}

// A catalog entry as a draft is written: the entry without what the gateway sets.
const DRAFT_FIELDS = ["title", "description", "owner", "open_type", "format", "update_frequency", "license", "keywords", "source", "fields"];

function draftBody(entry) {
  return Object.fromEntries(DRAFT_FIELDS.filter((name) => name in entry).map((name) => [name, entry[name]]));
}

function parsedEntry(text) {
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(400, "bad_json", t("bad_json"));
  }
}

function putDraft(id, body) {
  return api(`/v1/datasets/${encodeURIComponent(id)}/draft`, {
    method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
}

// Drafts awaiting review: edited as JSON by their owner, published by the operators.
function draftsSection(drafts, publishes) {
  const section = h("section", { "aria-labelledby": "drafts-heading" }, h("h2", { id: "drafts-heading" }, t("drafts_title")));
  if (drafts.length === 0) {
    section.append(h("p", { class: "empty" }, t("no_drafts")));
    return section;
  }
  section.append(h("ul", { class: "results" }, drafts.map((d) => {
    const status = h("p", { "aria-live": "polite" });
    const edit = h("form", { class: "search edit-draft" },
      h("label", { class: "text" }, t("draft_entry"),
        h("textarea", { name: "entry", rows: 12, required: true, spellcheck: "false" }, JSON.stringify(draftBody(d.entry), null, 2))),
      h("button", { type: "submit", class: "secondary" }, t("save_draft")));
    submitted(edit, status, async (data) => {
      await putDraft(d.entry.id, parsedEntry(data.get("entry")));
      await render();
    });
    const publish = publishes ? actionButton("publish", t("publish"), true, status,
      () => postJson(`/v1/datasets/${encodeURIComponent(d.entry.id)}/publish`, { draft_version: d.draft_version })) : null;
    return h("li", { class: "card", "data-draft": d.entry.id },
      h("h3", {}, h("code", {}, d.entry.id), " ", d.entry.title, " ", openTypeBadge(d.entry.open_type)),
      h("dl", { class: "facts" },
        fact(t("owner"), d.entry.owner),
        fact(t("draft_version"), String(d.draft_version)),
        fact(t("written_by"), d.written_by),
        fact(t("written_at"), h("time", { datetime: d.written_at }, formatTime(d.written_at)))),
      h("div", { class: "decide" }, h("details", {}, h("summary", {}, t("edit_draft")), edit), h("div", { class: "actions" }, publish), status));
  })));
  return section;
}

const DRAFT_TEMPLATE = {
  title: "", description: "", open_type: "unconditional", format: "csv", update_frequency: "monthly",
  license: "CC BY 4.0", keywords: [], source: { file: "" }, fields: [{ name: "", type: "string", description: "" }],
};

function newDraftForm() {
  const status = h("p", { "aria-live": "polite" });
  const form = h("form", { class: "search", id: "new-draft" },
    h("label", {}, t("draft_id"), h("input", { type: "text", name: "id", required: true, maxlength: 64 })),
    h("label", { class: "text" }, t("draft_entry"),
      h("textarea", { name: "entry", rows: 14, required: true, spellcheck: "false" }, JSON.stringify(DRAFT_TEMPLATE, null, 2))),
    h("button", { type: "submit", class: "primary" }, t("save_draft")));
  submitted(form, status, async (data) => {
    await putDraft(data.get("id").trim(), parsedEntry(data.get("entry")));
    await render();
  });
  return h("section", { "aria-labelledby": "new-draft-heading" }, h("h2", { id: "new-draft-heading" }, t("new_draft")),
    h("p", {}, t("new_draft_lead")), form, status);
}

function applicationsSection(applications, owner) {
  // An owner answers the oldest deadline first; a user sees its newest application first.
  const sorted = [...applications].sort((a, b) => owner
    ? (a.status === "submitted") === (b.status === "submitted") ? a.due_by.localeCompare(b.due_by) : a.status === "submitted" ? -1 : 1
    : b.submitted_at.localeCompare(a.submitted_at));
  const section = h("section", { "aria-labelledby": "applications-heading" },
    h("h2", { id: "applications-heading" }, t(owner ? "owner_applications" : "my_applications")));
  if (sorted.length === 0) {
    section.append(h("p", { class: "empty" }, t("no_applications")));
    return section;
  }
  section.append(h("ul", { class: "results" }, sorted.map((a) => h("li", { class: "card", "data-application": a.id },
    h("h3", {}, h("a", { href: `/datasets/${encodeURIComponent(a.dataset)}` }, a.dataset), " ",
      badge(a.status === "submitted" ? "pending" : a.status, t(a.status)),
      a.overdue ? [" ", badge("stale", t("overdue"))] : null),
    h("dl", { class: "facts" },
      fact(t("id"), h("code", {}, a.id)),
      owner ? fact(t("applicant"), a.applicant) : null,
      fact(t("submitted_at"), h("time", { datetime: a.submitted_at }, formatTime(a.submitted_at))),
      fact(t("due_by"), h("span", { "data-due-by": a.due_by }, dueDate(a))),
      fact(t("purpose"), a.purpose),
      fact(t("scenario"), a.scenario),
      fact(t("security_measures"), a.security_measures),
      fact(t("columns"), a.columns.join(", ")),
      a.reason ? fact(t("reason"), a.reason) : null),
    owner && a.status === "submitted" ? decisionForms(a) : null))));
  return section;
}

const MASKS = ["keep_first(1)", "keep_last(4)", "redact", "hash", "null", "year_only", "cn_id_card", "cn_mobile", "email"];

// An owner's answer to an application: approve with the agreement's terms, or reject with a reason.
function decisionForms(application) {
  const status = h("p", { "aria-live": "polite" });
  const number = (name, value) => h("label", {}, t(name), h("input", { type: "number", name, value, min: 1, required: true }));
  const nextYear = new Date(Date.now() + 365 * 86400000).toISOString().slice(0, 10);
  const approve = h("form", { class: "search approve" },
    h("fieldset", {}, h("legend", {}, t("columns")),
      application.columns.map((c) => h("label", { class: "check" },
        h("input", { type: "checkbox", name: "columns", value: c, checked: true }), " ", h("code", {}, c)))),
    h("fieldset", {}, h("legend", {}, t("masks")),
      application.columns.map((c) => h("label", {}, t("mask_for", c),
        h("select", { name: `mask:${c}` }, h("option", { value: "" }, t("mask_none")), MASKS.map((m) => h("option", { value: m }, m)))))),
    h("label", { class: "text" }, t("row_filter"), h("input", { type: "text", name: "row_filter", placeholder: t("row_filter_hint") })),
    h("label", {}, t("valid_until"), h("input", { type: "date", name: "valid_until", value: nextYear, required: true })),
    number("per_second", 5), number("burst", 10), number("requests_per_day", 1000), number("rows_per_day", 100000),
    number("bytes_per_day", 100000000),
    h("button", { type: "submit", class: "primary" }, t("approve")));
  submitted(approve, status, async (data) => {
    const columns = data.getAll("columns");
    const masks = Object.fromEntries(columns.map((c) => [c, data.get(`mask:${c}`)]).filter(([, m]) => m));
    const body = {
      columns, masks, valid_until: `${data.get("valid_until")}T00:00:00Z`,
      rate: { per_second: Number(data.get("per_second")), burst: Number(data.get("burst")) },
      quota: { requests_per_day: Number(data.get("requests_per_day")), rows_per_day: Number(data.get("rows_per_day")),
        bytes_per_day: Number(data.get("bytes_per_day")) },
    };
    if (data.get("row_filter").trim()) body.row_filter = data.get("row_filter").trim();
    await postJson(`/v1/applications/${encodeURIComponent(application.id)}/approve`, body);
    await render();
  });
  const reject = h("form", { class: "search reject" },
    h("label", { class: "text" }, t("reason"), h("textarea", { name: "reason", rows: 2, maxlength: 4000 })),
    h("button", { type: "submit", class: "secondary" }, t("reject")));
  submitted(reject, status, async (data) => {
    await postJson(`/v1/applications/${encodeURIComponent(application.id)}/reject`, { reason: data.get("reason") });
    await render();
  });
  return h("div", { class: "decide" },
    h("details", {}, h("summary", {}, t("approve_summary")), approve),
    h("details", {}, h("summary", {}, t("reject_summary")), reject),
    status);
}

function agreementsSection(agreements, owner) {
  const section = h("section", { "aria-labelledby": "agreements-heading" },
    h("h2", { id: "agreements-heading" }, t(owner ? "owner_agreements" : "my_agreements")));
  if (agreements.length === 0) {
    section.append(h("p", { class: "empty" }, t("no_agreements")));
    return section;
  }
  section.append(h("ul", { class: "results" }, agreements.map((a) => h("li", { class: "card", "data-agreement": a.id },
    h("h3", {}, h("code", {}, a.id), " ", badge(a.status === "active" ? "unconditional" : "stale", t(a.status))),
    h("dl", { class: "facts" },
      owner ? fact(t("holder"), a.principal) : null,
      a.purpose ? fact(t("purpose"), a.purpose) : null,
      fact(t("valid"), h("time", { datetime: a.valid_from }, formatTime(a.valid_from)), " – ",
        h("time", { datetime: a.valid_until }, formatTime(a.valid_until))),
      fact(t("rate"), t("rate_text", a.rate.per_second, a.rate.burst)),
      fact(t("quota"), t("quota_text", a.quota.requests_per_day, a.quota.rows_per_day, a.quota.bytes_per_day)),
      fact(t("used_today", a.quota_day), h("span", { "data-used-requests": a.used_today.requests },
        t("quota_text", a.used_today.requests, a.used_today.rows, a.used_today.bytes)))),
    a.datasets.map((d) => h("dl", { class: "facts", "data-terms": d.dataset },
      fact(t("dataset"), h("a", { href: `/datasets/${encodeURIComponent(d.dataset)}` }, d.dataset)),
      fact(t("columns"), d.columns.join(", ")),
      fact(t("row_filter"), d.row_filter ? h("code", {}, d.row_filter) : t("all_rows")),
      fact(t("masks"), Object.keys(d.masks ?? {}).length
        ? Object.entries(d.masks).map(([c, m]) => h("span", { class: "mask", "data-mask": c }, h("code", {}, c), ": ", m))
        : t("no_masks")))),
    owner ? agreementActions(a) : feedbackForm(a)))));
  return section;
}

function feedbackForm(agreement) {
  const status = h("p", { "aria-live": "polite" });
  const form = h("form", { class: "search feedback" },
    h("label", { class: "text" }, t("feedback_label"), h("textarea", { name: "usage", rows: 2, required: true, maxlength: 4000 })),
    h("button", { type: "submit", class: "primary" }, t("feedback_submit")));
  submitted(form, status, async (data) => {
    await postJson(`/v1/agreements/${encodeURIComponent(agreement.id)}/feedback`, { usage: data.get("usage") });
    form.reset();
    return h("span", {}, t("feedback_sent"));
  });
  return h("div", {}, form, status);
}

function agreementActions(agreement) {
  const status = h("p", { "aria-live": "polite" });
  const actions = { active: ["suspend", "revoke"], suspended: ["resume", "revoke"] }[agreement.status] ?? [];
  return h("div", { class: "actions" }, actions.map((action) => actionButton(action, t(action), false, status,
    () => api(`/v1/agreements/${encodeURIComponent(agreement.id)}/${action}`, { method: "POST" }))), status);
}

function notFound(main) {
  setTitle(t("not_found_title"));
  main.append(h("h1", {}, t("not_found_title")), h("p", {}, t("not_found")), h("p", {}, h("a", { href: "/" }, t("back"))));
}

// The API page: the data API's OpenAPI document, by tag.
async function apiPage(main) {
  setTitle(t("api_title"));
  main.append(h("h1", {}, t("api_title")), h("p", { class: "lead" }, t("api_lead"), " ", h("a", { href: "/openapi.json" }, t("api_document"))));
  let document_;
  try {
    document_ = await api("/openapi.json");
  } catch (error) {
    main.append(errorBox(error));
    return;
  }
  const byTag = new Map((document_.tags ?? []).map((tag) => [tag.name, { tag, operations: [] }]));
  for (const [path, item] of Object.entries(document_.paths)) {
    for (const method of ["get", "head", "post", "put", "delete", "patch"]) {
      const operation = item[method];
      if (!operation) continue;
      const name = operation.tags?.[0] ?? "";
      if (!byTag.has(name)) byTag.set(name, { tag: { name }, operations: [] });
      byTag.get(name).operations.push({ path, method, operation, shared: item.parameters ?? [] });
    }
  }
  for (const { tag, operations } of byTag.values()) {
    if (operations.length === 0) continue;
    main.append(h("section", { "aria-labelledby": `tag-${tag.name}` },
      h("h2", { id: `tag-${tag.name}` }, tag.name), tag.description ? h("p", {}, tag.description) : null,
      operations.map(({ path, method, operation, shared }) => {
        const parameters = [...shared, ...(operation.parameters ?? [])];
        return h("article", { class: "operation" },
          h("h3", {}, h("span", { class: "method" }, method.toUpperCase()), h("span", { class: "path" }, path),
            operation.summary ? h("span", {}, operation.summary) : null),
          operation.description ? h("p", {}, operation.description) : null,
          h("details", {}, h("summary", {}, `${t("parameters")} (${parameters.length}) · ${t("responses")} (${Object.keys(operation.responses ?? {}).length})`),
            parameters.length ? h("div", { class: "scroll", tabindex: "0", role: "region", "aria-label": `${method.toUpperCase()} ${path}` }, h("table", {},
              h("thead", {}, h("tr", {}, h("th", { scope: "col" }, t("field")), h("th", { scope: "col" }, t("location")), h("th", { scope: "col" }, t("description")))),
              h("tbody", {}, parameters.map((p) => h("tr", {}, h("td", {}, h("code", {}, p.name), p.required ? ` (${t("required")})` : ""),
                h("td", {}, p.in), h("td", { class: "wrap" }, p.description ?? "")))))) : null,
            h("ul", {}, Object.entries(operation.responses ?? {}).map(([status, r]) => h("li", {}, h("code", {}, status), " ", r.description ?? "")))));
      })));
  }
}

function applyLanguage() {
  document.documentElement.lang = language === "zh" ? "zh-CN" : "en";
  for (const element of document.querySelectorAll("[data-t]")) element.textContent = t(element.dataset.t);
  for (const element of document.querySelectorAll("[data-t-aria]")) element.setAttribute("aria-label", t(element.dataset.tAria));
  const button = document.getElementById("language");
  button.textContent = t("language");
  button.lang = language === "zh" ? "en" : "zh-CN";
}

async function render() {
  applyLanguage();
  const main = document.getElementById("main");
  main.replaceChildren(h("p", { class: "notice" }, t("loading")));
  const page = document.createDocumentFragment();
  const holder = h("div", {});
  page.append(holder);
  const path = location.pathname.replace(/\/+$/, "") || "/";
  const dataset = path.match(/^\/datasets\/([^/]+)$/);
  if (path === "/") await catalogPage(holder);
  else if (dataset) await datasetPage(holder, decodeURIComponent(dataset[1]));
  else if (path === "/docs") await apiPage(holder);
  else if (path === "/account") await accountPage(holder);
  else notFound(holder);
  main.replaceChildren(...holder.childNodes);
  main.dataset.ready = "true";
}

document.getElementById("language").addEventListener("click", () => {
  language = language === "zh" ? "en" : "zh";
  localStorage.setItem(LANGUAGE_KEY, language);
  delete document.getElementById("main").dataset.ready;
  render();
});

render();
