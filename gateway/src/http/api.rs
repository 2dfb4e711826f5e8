//! The OpenAPI documents, made from the types the handlers answer with.
//!
//! Every JSON answer a handler builds is a type of its domain's module (or a record type of the
//! store or the rules), and the documents' schemas are derived from those same types, so the
//! documents describe what is sent. The operations are listed in [`DataApi`] (the data port's
//! `/openapi.json`) and [`AdminApi`] (the admin port's `/admin/openapi.json`).

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Response, ResponseBuilder};
use utoipa::OpenApi;

use super::response::ErrorBody;

/// Adds the security schemes, and the answers every operation may give: each refusal status it
/// may answer, with the error codes that status carries, and "cannot serve now" (503, e.g. the
/// store or the audit log cannot take a write).
struct Common;

/// The refusals an operation of `tag` at `path` may answer: status, and what it means with its
/// error codes.
fn refusals(tag: &str, path: &str) -> Vec<(&'static str, &'static str)> {
    let admin = path.starts_with("/admin") || path == "/metrics";
    let mut out = Vec::new();
    if admin {
        if path == "/metrics" {
            return out;
        }
        out.push(("400", "Bad request: bad_body, bad_parameter, unknown_parameter, bad_id, bad_entry, bad_terms"));
        out.push(("401", "No operator token, or a wrong one: operator_token_required"));
        out.push(("404", "No such record: not_found"));
        if tag != "audit" && tag != "operations" {
            out.push((
                "409",
                "Conflicts with the record's state: conflict, already_decided, already_revoked, not_suspended",
            ));
        }
        return out;
    }
    if tag == "operations" {
        return out;
    }
    let data = tag == "data";
    out.push((
        "400",
        if data {
            "Bad request: bad_parameter, unknown_parameter, bad_filter, unknown_column, key_in_query, soql_unsupported, count_unavailable"
        } else {
            "Bad request: bad_body, bad_parameter, unknown_parameter, key_in_query, reason_required, response_required, bad_entry, bad_terms"
        },
    ));
    out.push(("401", "A key is needed, or the key is unknown or revoked: key_required, unknown_key"));
    out.push((
        "403",
        if data {
            "Outside the caller's grant: no_agreement, download_outside_scope"
        } else {
            "The caller's role may not do this: wrong_role"
        },
    ));
    out.push(("404", "No such dataset or record (non-open datasets are not found either): not_found"));
    if path.contains("/rows") {
        out.push(("406", "Accept takes none of the formats rows are answered in: not_acceptable"));
    }
    if !data {
        out.push((
            "409",
            "Conflicts with the record's state: conflict, already_decided, already_revoked, not_suspended",
        ));
    }
    if path.starts_with("/v1/datasets/{id}") {
        out.push(("410", "The dataset is withdrawn: dataset_withdrawn"));
    }
    if path.ends_with("/download") {
        out.push(("416", "The range lies outside the file: range_not_satisfiable"));
    }
    if data {
        out.push(("429", "A rate limit or daily quota is spent, or too many answers in flight: rate_limited, quota_exhausted, too_many_answers"));
    }
    if path == "/v1/reports" || path.ends_with("/objections") {
        out.push(("429", "Too many filings from one address or key: rate_limited"));
    }
    out
}

impl utoipa::Modify for Common {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("kaifang key").build(),
            ),
        );
        components
            .add_security_scheme("api_key", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))));
        let error = |description: &str| -> RefOr<Response> {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        utoipa::openapi::ContentBuilder::new()
                            .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build(),
            )
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            for operation in
                [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.head, &mut item.patch]
                    .into_iter()
                    .flatten()
            {
                let tag = operation.tags.as_ref().and_then(|t| t.first()).cloned().unwrap_or_default();
                let responses = &mut operation.responses.responses;
                for (status, description) in refusals(&tag, path) {
                    responses.entry(status.into()).or_insert_with(|| error(description));
                }
                responses
                    .entry("503".into())
                    .or_insert_with(|| error("Cannot serve now (store or audit log unavailable): store_unavailable, audit_unavailable, overloaded"));
            }
        }
    }
}

/// The data port: data, catalog and the workflows.
#[derive(OpenApi)]
#[openapi(
    info(title = "kaifang data API", description = "Public data, its catalog and the platform's workflows. \
        Keys go in `Authorization: Bearer` or `X-API-Key`, never in the URL. Pages of other origins may call \
        (CORS, as `[http.cors]` allows)."),
    servers((url = "/", description = "This gateway")),
    tags(
        (name = "data", description = "Rows, previews and downloads of datasets: unconditional ones for anyone, \
            conditional ones under an agreement, every call on them recorded"),
        (name = "catalog", description = "The catalog of open datasets, and owners' drafts, withdrawals and reopenings"),
        (name = "workflows", description = "Applications for conditional data, objections to data, misuse reports"),
        (name = "agreements", description = "The agreements that grant conditional data: read, feedback, suspend, revoke"),
        (name = "operations", description = "Health, readiness and this document"),
    ),
    paths(
        paths::healthz, paths::readyz, paths::openapi, paths::catalog, paths::dataset, paths::rows, paths::rows_as, paths::preview,
        paths::download, paths::download_head, paths::report, paths::agreements, paths::agreement,
        paths::feedback, paths::suspend, paths::resume, paths::revoke, paths::apply, paths::applications,
        paths::application, paths::approve, paths::reject, paths::put_draft, paths::get_draft, paths::user_drafts, paths::user_publish, paths::withdrawals, paths::withdraw,
        paths::reopen, paths::object, paths::objections, paths::objection, paths::resolve, paths::me,
    ),
    components(schemas(ErrorBody, paths::RowsFormat)),
    modifiers(&Common),
)]
pub struct DataApi;

/// The admin port: the operators' API.
#[derive(OpenApi)]
#[openapi(
    info(title = "kaifang admin API", description = "The operators' API; every call takes the operator token."),
    servers((url = "/", description = "This gateway's admin listener")),
    tags(
        (name = "principals", description = "Users and data owners, and their keys"),
        (name = "agreements", description = "Agreements, made and changed by the operators"),
        (name = "catalog", description = "Review and publication of drafts; withdrawals"),
        (name = "audit", description = "The audit log: export and tracing of who used a dataset"),
        (name = "workflows", description = "Applications, objections, notifications and reports across owners"),
        (name = "operations", description = "Metrics, the operation report, reload and this document"),
    ),
    paths(
        paths::admin_openapi, paths::metrics, paths::create_principal, paths::create_key, paths::list_keys,
        paths::revoke_key, paths::create_agreement, paths::list_agreements, paths::get_agreement,
        paths::admin_suspend, paths::admin_resume, paths::admin_revoke, paths::admin_feedback, paths::drafts,
        paths::publish, paths::admin_withdraw, paths::admin_reopen, paths::trace, paths::audit, paths::admin_applications,
        paths::admin_objections, paths::notifications, paths::reports, paths::operation_report, paths::reload,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Common),
    security(("bearer" = [])),
)]
pub struct AdminApi;

/// The documents, made once.
pub fn data_document() -> &'static str {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOC.get_or_init(|| DataApi::openapi().to_json().expect("the document serializes"))
}

pub fn admin_document() -> &'static str {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOC.get_or_init(|| AdminApi::openapi().to_json().expect("the document serializes"))
}

/// The operations. Request bodies are the handlers' own request types; answers are the types
/// above and the store's and rules' records. Each function only carries its `#[utoipa::path]`
/// for the documents above and is never called: the router is a `match`, which utoipa cannot
/// read (`every_documented_operation_is_routed` checks the two agree).
#[allow(dead_code)]
mod paths {
    use super::*;
    use crate::http::admin::{IssuedKey, KeyList, KeyRequest, KeyRevoked, NotificationList, PrincipalRequest, Trace};
    use crate::http::agreements::{AgreementList, AgreementRequest, AgreementView, FeedbackList, FeedbackRequest};
    use crate::http::applications::{ApplicationList, ApplicationRequest, ApplicationView, Approval, ApproveRequest};
    use crate::http::catalog::{CatalogPage, DatasetDescription, WithdrawalList, WithdrawalView};
    use crate::http::data::Preview;
    use crate::http::drafts::{DraftList, DraftRequest, DraftView, PublishRequest, Published};
    use crate::http::health::{Health, Readiness};
    use crate::http::objections::{ObjectionList, ObjectionRequest, ResolveRequest};
    use crate::http::reports::{Receipt, ReportList, ReportRequest};
    use crate::http::workflow::ReasonRequest;
    use crate::state::Reloaded;
    use crate::store::Withdrawal;
    use policy::Principal;
    use policy::{Agreement, Format, Objection, OpenType, UpdateFrequency};

    const RATE_HEADERS: &str = "Data answers carry X-Request-Id, X-Dataset-Version and, where a limit applies, \
        RateLimit-Policy, RateLimit, RateLimit-Limit, RateLimit-Remaining and RateLimit-Reset; a 429 carries Retry-After.";

    #[utoipa::path(get, path = "/healthz", tag = "operations", summary = "Liveness", description = "Answers 200 while the process serves.", responses((status = 200, body = Health)))]
    fn healthz() {}

    #[utoipa::path(get, path = "/readyz", tag = "operations", summary = "Readiness", description = "Store and audit log writable, sources present.",
        responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
    fn readyz() {}

    #[utoipa::path(get, path = "/openapi.json", tag = "operations", summary = "This document", description = "The OpenAPI document of the data API.", responses((status = 200, body = Object)))]
    fn openapi() {}

    #[utoipa::path(get, path = "/v1/catalog", tag = "catalog", summary = "List the catalog",
        description = "Published, non-withdrawn, open datasets, with each filter's values and how many entries each matches (`facets`).",
        params(
            ("owner" = Option<String>, Query, description = "Owning department (case-insensitive)"),
            ("open_type" = Option<OpenType>, Query, description = "unconditional or conditional"),
            ("format" = Option<Format>, Query, description = "The original file's format"),
            ("update_frequency" = Option<UpdateFrequency>, Query, description = "The declared update frequency"),
            ("q" = Option<String>, Query, description = "Text in title, description, keywords or owner"),
            ("page" = Option<u32>, Query, minimum = 1),
            ("per_page" = Option<u32>, Query, minimum = 1, maximum = 100),
        ),
        responses((status = 200, body = CatalogPage)))]
    fn catalog() {}

    #[utoipa::path(get, path = "/v1/datasets/{id}", tag = "catalog", summary = "Describe a dataset",
        description = "Metadata; fields and schema as the caller would receive them. 410 when withdrawn.",
        params(("id" = String, Path, description = "Dataset id; unknown and non-open ids both answer 404")),
        responses((status = 200, body = DatasetDescription)), security((), ("bearer" = []), ("api_key" = [])))]
    fn dataset() {}

    /// The formats rows are answered in.
    #[derive(utoipa::ToSchema)]
    #[schema(rename_all = "lowercase")]
    pub(super) enum RowsFormat {
        Csv,
        Ndjson,
        Json,
        Arrow,
    }

    const ROWS: &str = "Rows of the dataset within the caller's grant (its columns, its row filter, its masks), \
        filtered, ordered and paged as asked. Small answers from memory carry Content-Length; larger ones \
        stream. Compressed (zstd, br, gzip) as Accept-Encoding asks. A page with `limit` that is full carries \
        `Link: <...>; rel=\"next\"`; `Prefer: count=exact` adds `Content-Range: 0-99/12345` (the exact \
        count, where it can be had without reading the whole source; else 400 count_unavailable). On \
        unconditional data an ETag (If-None-Match answers 304) and Cache-Control: public, max-age from \
        the dataset's update frequency; conditional answers are private, no-store. Socrata's $select, \
        $where, $order, $limit and $offset are taken as columns, filter, order, limit and offset; other \
        SoQL parts are refused (400 soql_unsupported). `_` (a cache-buster) is ignored. Data answers \
        carry X-Request-Id, X-Dataset-Version and, where a limit applies, RateLimit-Policy, RateLimit, \
        RateLimit-Limit, RateLimit-Remaining and RateLimit-Reset; a 429 carries Retry-After.";

    #[utoipa::path(get, path = "/v1/datasets/{id}/rows", tag = "data", summary = "Read rows", description = ROWS,
        params(
            ("id" = String, Path, example = "enterprises"),
            ("columns" = Option<String>, Query, description = "Comma-separated columns, in order"),
            ("filter" = Option<String>, Query, description = "Row filter, e.g. `district = 'Haizhou' and n > 3`"),
            ("order" = Option<String>, Query, description = "Comma-separated sort keys; `-col` descending"),
            ("limit" = Option<u64>, Query), ("offset" = Option<u64>, Query),
            ("format" = Option<RowsFormat>, Query, description = "Default: from Accept (406 when it takes none of these), else json"),
            ("Prefer" = Option<String>, Header, description = "`count=exact` for the exact count in Content-Range"),
        ),
        responses(
            (status = 200, description = "Rows", content(
                (Vec<Object> = "application/json"), (String = "text/csv"), (String = "application/x-ndjson"),
                (String = "application/vnd.apache.arrow.stream"))),
            (status = 304, description = "Not modified (If-None-Match names the answer's ETag)"),
        ),
        security((), ("bearer" = []), ("api_key" = [])))]
    fn rows() {}

    #[utoipa::path(get, path = "/v1/datasets/{id}/rows.{format}", tag = "data", summary = "Read rows in the format the path names",
        description = "As `/v1/datasets/{id}/rows`, in the format the path's suffix names (`rows.csv` for pandas' \
            and polars' read_csv); saved by browsers as `{id}.{format}`.",
        params(
            ("id" = String, Path, example = "enterprises"),
            ("format" = RowsFormat, Path),
            ("columns" = Option<String>, Query), ("filter" = Option<String>, Query), ("order" = Option<String>, Query),
            ("limit" = Option<u64>, Query), ("offset" = Option<u64>, Query),
        ),
        responses(
            (status = 200, description = "Rows", content(
                (Vec<Object> = "application/json"), (String = "text/csv"), (String = "application/x-ndjson"),
                (String = "application/vnd.apache.arrow.stream"))),
            (status = 304, description = "Not modified"),
        ),
        security((), ("bearer" = []), ("api_key" = [])))]
    fn rows_as() {}

    #[utoipa::path(get, path = "/v1/datasets/{id}/preview", tag = "data", summary = "Preview a dataset", description = RATE_HEADERS,
        params(("id" = String, Path, example = "enterprises")),
        responses((status = 200, body = Preview)),
        security((), ("bearer" = []), ("api_key" = [])))]
    fn preview() {}

    #[utoipa::path(get, path = "/v1/datasets/{id}/download", tag = "data", summary = "Download the original file",
        description = "The original file, byte for byte: Range, ETag with If-None-Match, Last-Modified.",
        params(("id" = String, Path, example = "enterprises")),
        responses(
            (status = 200, description = "The file, in its own media type", content(
                (String = "text/csv; charset=utf-8"), (String = "application/x-ndjson"),
                (String = "application/vnd.apache.parquet"), (String = "application/vnd.apache.arrow.file"))),
            (status = 206, description = "The requested range", content(
                (String = "text/csv; charset=utf-8"), (String = "application/x-ndjson"),
                (String = "application/vnd.apache.parquet"), (String = "application/vnd.apache.arrow.file"))),
            (status = 304, description = "Not modified"),
        ),
        security((), ("bearer" = []), ("api_key" = [])))]
    fn download() {}

    #[utoipa::path(head, path = "/v1/datasets/{id}/download", tag = "data", summary = "Headers of the original file",
        description = "The download's headers without its body: length, ETag, Last-Modified.",
        params(("id" = String, Path, example = "enterprises")),
        responses((status = 200, description = "The file's headers"), (status = 304, description = "Not modified")),
        security((), ("bearer" = []), ("api_key" = [])))]
    fn download_head() {}

    #[utoipa::path(post, path = "/v1/reports", tag = "workflows", summary = "Report misuse", description = "Report misuse of public data.",
        request_body = ReportRequest, responses((status = 201, body = Receipt)),
        security((), ("bearer" = []), ("api_key" = [])))]
    fn report() {}

    #[utoipa::path(get, path = "/v1/agreements", tag = "agreements", summary = "List agreements",
        description = "A user's own agreements; an owner's, those on its datasets; each with what it used today.",
        responses((status = 200, body = AgreementList)), security(("bearer" = []), ("api_key" = [])))]
    fn agreements() {}

    #[utoipa::path(get, path = "/v1/agreements/{id}", tag = "agreements", summary = "Read an agreement", description = "One agreement the caller holds, or one on a dataset the caller owns, with what it used today.", params(("id" = String, Path, example = "demo-enterprises")),
        responses((status = 200, body = AgreementView)), security(("bearer" = []), ("api_key" = [])))]
    fn agreement() {}

    #[utoipa::path(post, path = "/v1/agreements/{id}/feedback", tag = "agreements", summary = "Give feedback on an agreement", description = "Give feedback on an agreement.", params(("id" = String, Path, example = "demo-enterprises")),
        request_body = FeedbackRequest, responses((status = 201, body = Receipt)),
        security(("bearer" = []), ("api_key" = [])))]
    fn feedback() {}

    #[utoipa::path(post, path = "/v1/agreements/{id}/suspend", tag = "agreements", summary = "Suspend an agreement", params(("id" = String, Path, example = "demo-enterprises")),
        description = "Owner: effective on the holder's next request and on its answers in flight.",
        responses((status = 200, body = Agreement)), security(("bearer" = []), ("api_key" = [])))]
    fn suspend() {}

    #[utoipa::path(post, path = "/v1/agreements/{id}/resume", tag = "agreements", summary = "Resume an agreement", description = "Owner: a suspended agreement is in force again from the holder's next request.", params(("id" = String, Path, example = "demo-enterprises")),
        responses((status = 200, body = Agreement)), security(("bearer" = []), ("api_key" = [])))]
    fn resume() {}

    #[utoipa::path(post, path = "/v1/agreements/{id}/revoke", tag = "agreements", summary = "Revoke an agreement", params(("id" = String, Path, example = "demo-enterprises")),
        description = "Owner: ends the agreement for good, in-flight answers included.",
        responses((status = 200, body = Agreement)), security(("bearer" = []), ("api_key" = [])))]
    fn revoke() {}

    #[utoipa::path(get, path = "/v1/me", tag = "workflows", summary = "Who the key names",
        description = "The principal the caller's key was issued to: its id, name, role (user, owner) and, for an owner, its department.",
        responses((status = 200, body = Principal)), security(("bearer" = []), ("api_key" = [])))]
    fn me() {}

    #[utoipa::path(post, path = "/v1/applications", tag = "workflows", summary = "Apply for a conditional dataset",
        description = "User: apply for a conditionally open dataset; due 10 working days on.",
        request_body = ApplicationRequest, responses((status = 201, body = ApplicationView)),
        security(("bearer" = []), ("api_key" = [])))]
    fn apply() {}

    #[utoipa::path(get, path = "/v1/applications", tag = "workflows", summary = "List applications", description = "A user's own applications; an owner's, those on its datasets.",
        params(("status" = Option<policy::ApplicationStatus>, Query)),
        responses((status = 200, body = ApplicationList)), security(("bearer" = []), ("api_key" = [])))]
    fn applications() {}

    #[utoipa::path(get, path = "/v1/applications/{id}", tag = "workflows", summary = "Read an application", description = "One application the caller made, or one on a dataset the caller owns.", params(("id" = String, Path)),
        responses((status = 200, body = ApplicationView)), security(("bearer" = []), ("api_key" = [])))]
    fn application() {}

    #[utoipa::path(post, path = "/v1/applications/{id}/approve", tag = "workflows", summary = "Approve an application", params(("id" = String, Path)),
        description = "Owner: approve with terms; the agreement is in force from the applicant's next request.",
        request_body = ApproveRequest, responses((status = 200, body = Approval)),
        security(("bearer" = []), ("api_key" = [])))]
    fn approve() {}

    #[utoipa::path(post, path = "/v1/applications/{id}/reject", tag = "workflows", summary = "Reject an application", params(("id" = String, Path)),
        description = "Owner: reject; the reason is required.",
        request_body = ReasonRequest, responses((status = 200, body = ApplicationView)),
        security(("bearer" = []), ("api_key" = [])))]
    fn reject() {}

    #[utoipa::path(put, path = "/v1/datasets/{id}/draft", tag = "catalog", summary = "Write a draft catalog entry", params(("id" = String, Path, example = "enterprises")),
        description = "Owner: write a draft entry (new, or a change); served once the operators publish it.",
        request_body = DraftRequest, responses((status = 200, body = DraftView)),
        security(("bearer" = []), ("api_key" = [])))]
    fn put_draft() {}

    #[utoipa::path(get, path = "/v1/datasets/{id}/draft", tag = "catalog", summary = "Read a draft catalog entry", description = "The owner's draft entry for the dataset, as written.", params(("id" = String, Path, example = "enterprises")),
        responses((status = 200, body = DraftView)), security(("bearer" = []), ("api_key" = [])))]
    fn get_draft() {}

    #[utoipa::path(get, path = "/v1/drafts", tag = "catalog", summary = "List drafts awaiting publication",
        description = "Owner: its department's draft entries awaiting review; an operator's key: every one.",
        responses((status = 200, body = DraftList)), security(("bearer" = []), ("api_key" = [])))]
    fn user_drafts() {}

    #[utoipa::path(post, path = "/v1/datasets/{id}/publish", tag = "catalog", summary = "Publish a reviewed draft", params(("id" = String, Path, example = "licences")),
        description = "Operator's key: serve the draft at the revision reviewed (409 if it changed since).",
        request_body = PublishRequest, responses((status = 200, body = Published)),
        security(("bearer" = []), ("api_key" = [])))]
    fn user_publish() {}

    #[utoipa::path(get, path = "/v1/withdrawals", tag = "catalog", summary = "List withdrawals",
        description = "Owner: the withdrawals in force of its department's datasets, newest first; an operator's key: every one.",
        responses((status = 200, body = WithdrawalList)), security(("bearer" = []), ("api_key" = [])))]
    fn withdrawals() {}

    #[utoipa::path(post, path = "/v1/datasets/{id}/withdraw", tag = "catalog", summary = "Withdraw a dataset", params(("id" = String, Path, example = "enterprises")),
        description = "Owner: withdraw at once (410 from the next request, answers in flight cut).",
        request_body = ReasonRequest, responses((status = 200, body = WithdrawalView)),
        security(("bearer" = []), ("api_key" = [])))]
    fn withdraw() {}

    #[utoipa::path(post, path = "/v1/datasets/{id}/reopen", tag = "catalog", summary = "Reopen a withdrawn dataset", description = "Owner: a withdrawn dataset is served again from the next request.", params(("id" = String, Path, example = "enterprises")),
        responses((status = 200, body = Withdrawal)), security(("bearer" = []), ("api_key" = [])))]
    fn reopen() {}

    #[utoipa::path(post, path = "/v1/datasets/{id}/objections", tag = "workflows", summary = "Object to a dataset's data", params(("id" = String, Path, example = "enterprises")),
        description = "Anyone: flag an error or omission; anonymous filers leave a contact.",
        request_body = ObjectionRequest, responses((status = 201, body = Objection)),
        security((), ("bearer" = []), ("api_key" = [])))]
    fn object() {}

    #[utoipa::path(get, path = "/v1/objections", tag = "workflows", summary = "List objections",
        description = "Owner: the objections on its datasets.",
        params(("status" = Option<policy::ObjectionStatus>, Query), ("dataset" = Option<String>, Query)),
        responses((status = 200, body = ObjectionList)), security(("bearer" = []), ("api_key" = [])))]
    fn objections() {}

    #[utoipa::path(get, path = "/v1/objections/{id}", tag = "workflows", summary = "Read an objection", description = "One objection, as filed and as answered.", params(("id" = String, Path)),
        responses((status = 200, body = Objection)), security((), ("bearer" = []), ("api_key" = [])))]
    fn objection() {}

    #[utoipa::path(post, path = "/v1/objections/{id}/resolve", tag = "workflows", summary = "Resolve an objection", description = "Owner: answer an objection (corrected, or rejected with a response).", params(("id" = String, Path)),
        request_body = ResolveRequest, responses((status = 200, body = Objection)),
        security(("bearer" = []), ("api_key" = [])))]
    fn resolve() {}

    // ---- admin port ----

    #[utoipa::path(get, path = "/admin/openapi.json", tag = "operations", summary = "This document", description = "The OpenAPI document of the admin API.", responses((status = 200, body = Object)))]
    fn admin_openapi() {}

    #[utoipa::path(get, path = "/metrics", tag = "operations", summary = "Prometheus metrics", description = "Prometheus exposition; no token needed.",
        responses((status = 200, content((String = "text/plain")))), security(()))]
    fn metrics() {}

    #[utoipa::path(post, path = "/admin/principals", tag = "principals", summary = "Register a principal", description = "A user or a data owner (a department), by id.", request_body = PrincipalRequest,
        responses((status = 201, body = Principal)))]
    fn create_principal() {}

    #[utoipa::path(post, path = "/admin/keys", tag = "principals", summary = "Issue a key", description = "A new API key for a principal; the key is shown once.", request_body = KeyRequest,
        responses((status = 201, body = IssuedKey)))]
    fn create_key() {}

    #[utoipa::path(get, path = "/admin/keys", tag = "principals", summary = "List keys", description = "Every key, by id, with its principal and state (never the key itself).", responses((status = 200, body = KeyList)))]
    fn list_keys() {}

    #[utoipa::path(delete, path = "/admin/keys/{id}", tag = "principals", summary = "Revoke a key", description = "Refused from the key's next request on every instance.", params(("id" = String, Path)),
        responses((status = 200, body = KeyRevoked)))]
    fn revoke_key() {}

    #[utoipa::path(post, path = "/admin/agreements", tag = "agreements", summary = "Make an agreement", description = "An agreement made directly by the operators, with its scope and terms.", request_body = AgreementRequest,
        responses((status = 201, body = Agreement)))]
    fn create_agreement() {}

    #[utoipa::path(get, path = "/admin/agreements", tag = "agreements", summary = "List agreements", description = "Every agreement.", responses((status = 200, body = AgreementList)))]
    fn list_agreements() {}

    #[utoipa::path(get, path = "/admin/agreements/{id}", tag = "agreements", summary = "Read an agreement", description = "One agreement, with its scope and terms.", params(("id" = String, Path, example = "demo-enterprises")),
        responses((status = 200, body = Agreement)))]
    fn get_agreement() {}

    #[utoipa::path(post, path = "/admin/agreements/{id}/suspend", tag = "agreements", summary = "Suspend an agreement", description = "Effective on the holder's next request and on its answers in flight.", params(("id" = String, Path, example = "demo-enterprises")),
        responses((status = 200, body = Agreement)))]
    fn admin_suspend() {}

    #[utoipa::path(post, path = "/admin/agreements/{id}/resume", tag = "agreements", summary = "Resume an agreement", description = "In force again from the holder's next request.", params(("id" = String, Path, example = "demo-enterprises")),
        responses((status = 200, body = Agreement)))]
    fn admin_resume() {}

    #[utoipa::path(post, path = "/admin/agreements/{id}/revoke", tag = "agreements", summary = "Revoke an agreement", description = "Ends the agreement for good, answers in flight included.", params(("id" = String, Path, example = "demo-enterprises")),
        responses((status = 200, body = Agreement)))]
    fn admin_revoke() {}

    #[utoipa::path(get, path = "/admin/agreements/{id}/feedback", tag = "agreements", summary = "Read an agreement's feedback", description = "What the holder reported of its use of the data.", params(("id" = String, Path, example = "demo-enterprises")),
        responses((status = 200, body = FeedbackList)))]
    fn admin_feedback() {}

    #[utoipa::path(get, path = "/admin/drafts", tag = "catalog", summary = "List drafts awaiting publication", description = "Draft entries owners wrote, awaiting review.", responses((status = 200, body = DraftList)))]
    fn drafts() {}

    #[utoipa::path(post, path = "/admin/datasets/{id}/publish", tag = "catalog", summary = "Publish a draft", description = "A reviewed draft becomes the catalog entry served from the next request.", params(("id" = String, Path, example = "enterprises")),
        request_body = PublishRequest, responses((status = 200, body = Published)))]
    fn publish() {}

    #[utoipa::path(post, path = "/admin/datasets/{id}/withdraw", tag = "catalog", summary = "Withdraw a dataset", description = "Withdraw at once (410 from the next request, answers in flight cut).", params(("id" = String, Path, example = "enterprises")),
        request_body = ReasonRequest, responses((status = 200, body = WithdrawalView)))]
    fn admin_withdraw() {}

    #[utoipa::path(post, path = "/admin/datasets/{id}/reopen", tag = "catalog", summary = "Reopen a withdrawn dataset", description = "A withdrawn dataset is served again from the next request.", params(("id" = String, Path, example = "enterprises")),
        responses((status = 200, body = Withdrawal)))]
    fn admin_reopen() {}

    #[utoipa::path(get, path = "/admin/datasets/{id}/trace", tag = "audit", summary = "Trace who used a dataset", description = "Every principal and agreement that received data of the dataset in the period, from the audit log.",
        params(("id" = String, Path, example = "enterprises"), ("since" = Option<DateTime<Utc>>, Query), ("until" = Option<DateTime<Utc>>, Query)),
        responses((status = 200, body = Trace)))]
    fn trace() {}

    #[utoipa::path(get, path = "/admin/audit", tag = "audit", summary = "Export audit records", description = "Audit records, one JSON object per line.",
        params(("dataset" = Option<String>, Query), ("principal" = Option<String>, Query),
               ("agreement" = Option<String>, Query), ("since" = Option<DateTime<Utc>>, Query),
               ("until" = Option<DateTime<Utc>>, Query)),
        responses((status = 200, content((String = "application/x-ndjson")))))]
    fn audit() {}

    #[utoipa::path(get, path = "/admin/applications", tag = "workflows", summary = "List all applications", description = "Applications on every dataset, by state.",
        params(("status" = Option<policy::ApplicationStatus>, Query)), responses((status = 200, body = ApplicationList)))]
    fn admin_applications() {}

    #[utoipa::path(get, path = "/admin/objections", tag = "workflows", summary = "List all objections", description = "Objections on every dataset, by state.",
        params(("status" = Option<policy::ObjectionStatus>, Query), ("dataset" = Option<String>, Query)),
        responses((status = 200, body = ObjectionList)))]
    fn admin_objections() {}

    #[utoipa::path(get, path = "/admin/notifications", tag = "workflows", summary = "List owners' notifications", description = "What was sent to owners (new applications and objections, deadlines coming close), and how delivery went.", responses((status = 200, body = NotificationList)))]
    fn notifications() {}

    #[utoipa::path(get, path = "/admin/reports", tag = "workflows", summary = "List misuse reports", description = "Reports of misuse of public data, as filed.", responses((status = 200, body = ReportList)))]
    fn reports() {}

    #[utoipa::path(get, path = "/admin/report", tag = "operations", summary = "The operation report",
        description = "The platform's operation report over the days `from` to `to` (the platform's time zone, at most 1098 days): the catalog, data quality, applications and their deadlines (art. 39), the use of conditional data, misuse reports and the audit log's integrity; for one owning department with `owner`. JSON by default; `format=html` (charts as inline SVG) or `format=pdf` (printed by Chromium where it is installed, else 503 `report_failed` saying so).",
        params(("from" = String, Query, description = "First day, YYYY-MM-DD", example = "2026-11-01"),
               ("to" = String, Query, description = "Last day, included", example = "2026-11-30"),
               ("format" = Option<String>, Query, description = "json (the default), html or pdf"),
               ("owner" = Option<String>, Query, description = "Only this owning department's datasets")),
        responses((status = 200, body = crate::operation::OperationReport, description = "The report (JSON; text/html or application/pdf as asked)"),
                  (status = 400, body = ErrorBody)))]
    fn operation_report() {}

    #[utoipa::path(post, path = "/admin/reload", tag = "operations", summary = "Reload the configuration", description = "Reads the configuration again; a configuration with problems changes nothing and is answered 422 with every problem.",
        responses((status = 200, body = Reloaded), (status = 422, body = ErrorBody)))]
    fn reload() {}
}

#[cfg(test)]
mod tests {
    /// The document's prose states limits the code keeps as constants: it must say what they are.
    #[test]
    fn the_document_states_the_limits_the_code_keeps() {
        let document = super::data_document();
        let preview = format!("Up to {} rows", super::super::data::PREVIEW_ROWS);
        assert!(document.contains(&preview), "the preview's description says `{preview}`");
        let due = format!("due {} working days on", policy::workflow::ANSWER_WITHIN_WORKING_DAYS);
        assert!(document.contains(&due), "the application's description says `{due}`");
    }
}
