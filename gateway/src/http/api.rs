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

/// Adds the security schemes, and the answers every operation may give: a refusal (4XX) and
/// "cannot serve now" (503, e.g. the store or the audit log cannot take a write).
struct Common;

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
        for item in openapi.paths.paths.values_mut() {
            for operation in
                [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.head, &mut item.patch]
                    .into_iter()
                    .flatten()
            {
                let responses = &mut operation.responses.responses;
                responses.entry("4XX".into()).or_insert_with(|| error("Refused: see the error's code and message"));
                responses
                    .entry("503".into())
                    .or_insert_with(|| error("Cannot serve now (store or audit log unavailable)"));
            }
        }
    }
}

/// The data port: data, catalog and the workflows.
#[derive(OpenApi)]
#[openapi(
    info(title = "kaifang data API", description = "Public data, its catalog and the platform's workflows."),
    paths(
        paths::healthz, paths::readyz, paths::openapi, paths::catalog, paths::dataset, paths::rows, paths::preview,
        paths::download, paths::download_head, paths::report, paths::agreements, paths::agreement,
        paths::feedback, paths::suspend, paths::resume, paths::revoke, paths::apply, paths::applications,
        paths::application, paths::approve, paths::reject, paths::put_draft, paths::get_draft, paths::withdraw,
        paths::reopen, paths::object, paths::objections, paths::objection, paths::resolve,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Common),
)]
pub struct DataApi;

/// The admin port: the operators' API.
#[derive(OpenApi)]
#[openapi(
    info(title = "kaifang admin API", description = "The operators' API; every call takes the operator token."),
    paths(
        paths::admin_openapi, paths::metrics, paths::create_principal, paths::create_key, paths::list_keys,
        paths::revoke_key, paths::create_agreement, paths::list_agreements, paths::get_agreement,
        paths::admin_suspend, paths::admin_resume, paths::admin_revoke, paths::admin_feedback, paths::drafts,
        paths::publish, paths::admin_withdraw, paths::admin_reopen, paths::trace, paths::audit, paths::admin_applications,
        paths::admin_objections, paths::notifications, paths::reports, paths::reload,
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
    use crate::http::agreements::{AgreementList, AgreementRequest, FeedbackList, FeedbackRequest};
    use crate::http::applications::{ApplicationList, ApplicationRequest, ApplicationView, Approval, ApproveRequest};
    use crate::http::catalog::{CatalogPage, DatasetDescription, WithdrawalView};
    use crate::http::data::Preview;
    use crate::http::drafts::{DraftList, DraftRequest, DraftView, PublishRequest, Published};
    use crate::http::health::{Health, Readiness};
    use crate::http::objections::{ObjectionList, ObjectionRequest, ResolveRequest};
    use crate::http::reports::{Receipt, ReportList, ReportRequest};
    use crate::http::workflow::ReasonRequest;
    use crate::state::Reloaded;
    use crate::store::Withdrawal;
    use policy::Principal;
    use policy::{Agreement, Objection, OpenType};

    const RATE_HEADERS: &str = "Data answers carry X-Request-Id, X-Dataset-Version and, where a limit applies, \
        RateLimit-Policy, RateLimit, RateLimit-Limit, RateLimit-Remaining and RateLimit-Reset; a 429 carries Retry-After.";

    #[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
    fn healthz() {}

    #[utoipa::path(get, path = "/readyz", tag = "operations", description = "Store and audit log writable, sources present.",
        responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
    fn readyz() {}

    #[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, body = Object)))]
    fn openapi() {}

    #[utoipa::path(get, path = "/v1/catalog", tag = "catalog",
        description = "Published, non-withdrawn, open datasets.",
        params(
            ("owner" = Option<String>, Query, description = "Owning department (case-insensitive)"),
            ("open_type" = Option<OpenType>, Query, description = "unconditional or conditional"),
            ("q" = Option<String>, Query, description = "Text in title, description, keywords or owner"),
            ("page" = Option<u32>, Query, minimum = 1),
            ("per_page" = Option<u32>, Query, minimum = 1, maximum = 100),
        ),
        responses((status = 200, body = CatalogPage)))]
    fn catalog() {}

    #[utoipa::path(get, path = "/v1/datasets/{id}", tag = "catalog",
        description = "Metadata; fields and schema as the caller would receive them. 410 when withdrawn.",
        params(("id" = String, Path, description = "Dataset id; unknown and non-open ids both answer 404")),
        responses((status = 200, body = DatasetDescription)), security((), ("bearer" = []), ("api_key" = [])))]
    fn dataset() {}

    #[utoipa::path(get, path = "/v1/datasets/{id}/rows", tag = "data", description = RATE_HEADERS,
        params(
            ("id" = String, Path),
            ("columns" = Option<String>, Query, description = "Comma-separated columns, in order"),
            ("filter" = Option<String>, Query, description = "Row filter, e.g. `district = 'Haizhou' and n > 3`"),
            ("order" = Option<String>, Query, description = "Comma-separated sort keys; `-col` descending"),
            ("limit" = Option<u64>, Query), ("offset" = Option<u64>, Query),
            ("format" = Option<String>, Query, description = "csv, ndjson, json or arrow; default from Accept, else json"),
        ),
        responses(
            (status = 200, description = "Rows, streamed", content(
                (Vec<Object> = "application/json"), (String = "text/csv"), (String = "application/x-ndjson"),
                (String = "application/vnd.apache.arrow.stream"))),
            (status = 429, description = "A rate limit or daily quota is spent", body = ErrorBody),
        ),
        security((), ("bearer" = []), ("api_key" = [])))]
    fn rows() {}

    #[utoipa::path(get, path = "/v1/datasets/{id}/preview", tag = "data", description = RATE_HEADERS,
        params(("id" = String, Path, example = "enterprises")),
        responses((status = 200, body = Preview), (status = 429, body = ErrorBody)),
        security((), ("bearer" = []), ("api_key" = [])))]
    fn preview() {}

    #[utoipa::path(get, path = "/v1/datasets/{id}/download", tag = "data",
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
            (status = 429, body = ErrorBody),
        ),
        security((), ("bearer" = []), ("api_key" = [])))]
    fn download() {}

    #[utoipa::path(head, path = "/v1/datasets/{id}/download", tag = "data", params(("id" = String, Path, example = "enterprises")),
        responses((status = 200, description = "The file's headers"), (status = 304, description = "Not modified")),
        security((), ("bearer" = []), ("api_key" = [])))]
    fn download_head() {}

    #[utoipa::path(post, path = "/v1/reports", tag = "workflows", description = "Report misuse of public data.",
        request_body = ReportRequest, responses((status = 201, body = Receipt)),
        security((), ("bearer" = []), ("api_key" = [])))]
    fn report() {}

    #[utoipa::path(get, path = "/v1/agreements", tag = "agreements",
        description = "A user's own agreements; an owner's, those on its datasets.",
        responses((status = 200, body = AgreementList)), security(("bearer" = []), ("api_key" = [])))]
    fn agreements() {}

    #[utoipa::path(get, path = "/v1/agreements/{id}", tag = "agreements", params(("id" = String, Path, example = "demo-enterprises")),
        responses((status = 200, body = Agreement)), security(("bearer" = []), ("api_key" = [])))]
    fn agreement() {}

    #[utoipa::path(post, path = "/v1/agreements/{id}/feedback", tag = "agreements", params(("id" = String, Path, example = "demo-enterprises")),
        request_body = FeedbackRequest, responses((status = 201, body = Receipt)),
        security(("bearer" = []), ("api_key" = [])))]
    fn feedback() {}

    #[utoipa::path(post, path = "/v1/agreements/{id}/suspend", tag = "agreements", params(("id" = String, Path, example = "demo-enterprises")),
        description = "Owner: effective on the holder's next request and on its answers in flight.",
        responses((status = 200, body = Agreement)), security(("bearer" = []), ("api_key" = [])))]
    fn suspend() {}

    #[utoipa::path(post, path = "/v1/agreements/{id}/resume", tag = "agreements", params(("id" = String, Path, example = "demo-enterprises")),
        responses((status = 200, body = Agreement)), security(("bearer" = []), ("api_key" = [])))]
    fn resume() {}

    #[utoipa::path(post, path = "/v1/agreements/{id}/revoke", tag = "agreements", params(("id" = String, Path, example = "demo-enterprises")),
        description = "Owner: ends the agreement for good, in-flight answers included.",
        responses((status = 200, body = Agreement)), security(("bearer" = []), ("api_key" = [])))]
    fn revoke() {}

    #[utoipa::path(post, path = "/v1/applications", tag = "workflows",
        description = "User: apply for a conditionally open dataset; due 10 working days on.",
        request_body = ApplicationRequest, responses((status = 201, body = ApplicationView)),
        security(("bearer" = []), ("api_key" = [])))]
    fn apply() {}

    #[utoipa::path(get, path = "/v1/applications", tag = "workflows",
        params(("status" = Option<policy::ApplicationStatus>, Query)),
        responses((status = 200, body = ApplicationList)), security(("bearer" = []), ("api_key" = [])))]
    fn applications() {}

    #[utoipa::path(get, path = "/v1/applications/{id}", tag = "workflows", params(("id" = String, Path)),
        responses((status = 200, body = ApplicationView)), security(("bearer" = []), ("api_key" = [])))]
    fn application() {}

    #[utoipa::path(post, path = "/v1/applications/{id}/approve", tag = "workflows", params(("id" = String, Path)),
        description = "Owner: approve with terms; the agreement is in force from the applicant's next request.",
        request_body = ApproveRequest, responses((status = 200, body = Approval)),
        security(("bearer" = []), ("api_key" = [])))]
    fn approve() {}

    #[utoipa::path(post, path = "/v1/applications/{id}/reject", tag = "workflows", params(("id" = String, Path)),
        description = "Owner: reject; the reason is required.",
        request_body = ReasonRequest, responses((status = 200, body = ApplicationView)),
        security(("bearer" = []), ("api_key" = [])))]
    fn reject() {}

    #[utoipa::path(put, path = "/v1/datasets/{id}/draft", tag = "catalog", params(("id" = String, Path, example = "enterprises")),
        description = "Owner: write a draft entry (new, or a change); served once the operators publish it.",
        request_body = DraftRequest, responses((status = 200, body = DraftView)),
        security(("bearer" = []), ("api_key" = [])))]
    fn put_draft() {}

    #[utoipa::path(get, path = "/v1/datasets/{id}/draft", tag = "catalog", params(("id" = String, Path, example = "enterprises")),
        responses((status = 200, body = DraftView)), security(("bearer" = []), ("api_key" = [])))]
    fn get_draft() {}

    #[utoipa::path(post, path = "/v1/datasets/{id}/withdraw", tag = "catalog", params(("id" = String, Path, example = "enterprises")),
        description = "Owner: withdraw at once (410 from the next request, answers in flight cut).",
        request_body = ReasonRequest, responses((status = 200, body = WithdrawalView)),
        security(("bearer" = []), ("api_key" = [])))]
    fn withdraw() {}

    #[utoipa::path(post, path = "/v1/datasets/{id}/reopen", tag = "catalog", params(("id" = String, Path, example = "enterprises")),
        responses((status = 200, body = Withdrawal)), security(("bearer" = []), ("api_key" = [])))]
    fn reopen() {}

    #[utoipa::path(post, path = "/v1/datasets/{id}/objections", tag = "workflows", params(("id" = String, Path, example = "enterprises")),
        description = "Anyone: flag an error or omission; anonymous filers leave a contact.",
        request_body = ObjectionRequest, responses((status = 201, body = Objection)),
        security((), ("bearer" = []), ("api_key" = [])))]
    fn object() {}

    #[utoipa::path(get, path = "/v1/objections", tag = "workflows",
        description = "Owner: the objections on its datasets.",
        params(("status" = Option<policy::ObjectionStatus>, Query), ("dataset" = Option<String>, Query)),
        responses((status = 200, body = ObjectionList)), security(("bearer" = []), ("api_key" = [])))]
    fn objections() {}

    #[utoipa::path(get, path = "/v1/objections/{id}", tag = "workflows", params(("id" = String, Path)),
        responses((status = 200, body = Objection)), security((), ("bearer" = []), ("api_key" = [])))]
    fn objection() {}

    #[utoipa::path(post, path = "/v1/objections/{id}/resolve", tag = "workflows", params(("id" = String, Path)),
        request_body = ResolveRequest, responses((status = 200, body = Objection)),
        security(("bearer" = []), ("api_key" = [])))]
    fn resolve() {}

    // ---- admin port ----

    #[utoipa::path(get, path = "/admin/openapi.json", tag = "operations", responses((status = 200, body = Object)))]
    fn admin_openapi() {}

    #[utoipa::path(get, path = "/metrics", tag = "operations", description = "Prometheus exposition; no token needed.",
        responses((status = 200, content((String = "text/plain")))), security(()))]
    fn metrics() {}

    #[utoipa::path(post, path = "/admin/principals", tag = "principals", request_body = PrincipalRequest,
        responses((status = 201, body = Principal)))]
    fn create_principal() {}

    #[utoipa::path(post, path = "/admin/keys", tag = "principals", request_body = KeyRequest,
        responses((status = 201, body = IssuedKey)))]
    fn create_key() {}

    #[utoipa::path(get, path = "/admin/keys", tag = "principals", responses((status = 200, body = KeyList)))]
    fn list_keys() {}

    #[utoipa::path(delete, path = "/admin/keys/{id}", tag = "principals", params(("id" = String, Path)),
        responses((status = 200, body = KeyRevoked)))]
    fn revoke_key() {}

    #[utoipa::path(post, path = "/admin/agreements", tag = "agreements", request_body = AgreementRequest,
        responses((status = 201, body = Agreement)))]
    fn create_agreement() {}

    #[utoipa::path(get, path = "/admin/agreements", tag = "agreements", responses((status = 200, body = AgreementList)))]
    fn list_agreements() {}

    #[utoipa::path(get, path = "/admin/agreements/{id}", tag = "agreements", params(("id" = String, Path, example = "demo-enterprises")),
        responses((status = 200, body = Agreement)))]
    fn get_agreement() {}

    #[utoipa::path(post, path = "/admin/agreements/{id}/suspend", tag = "agreements", params(("id" = String, Path, example = "demo-enterprises")),
        responses((status = 200, body = Agreement)))]
    fn admin_suspend() {}

    #[utoipa::path(post, path = "/admin/agreements/{id}/resume", tag = "agreements", params(("id" = String, Path, example = "demo-enterprises")),
        responses((status = 200, body = Agreement)))]
    fn admin_resume() {}

    #[utoipa::path(post, path = "/admin/agreements/{id}/revoke", tag = "agreements", params(("id" = String, Path, example = "demo-enterprises")),
        responses((status = 200, body = Agreement)))]
    fn admin_revoke() {}

    #[utoipa::path(get, path = "/admin/agreements/{id}/feedback", tag = "agreements", params(("id" = String, Path, example = "demo-enterprises")),
        responses((status = 200, body = FeedbackList)))]
    fn admin_feedback() {}

    #[utoipa::path(get, path = "/admin/drafts", tag = "catalog", responses((status = 200, body = DraftList)))]
    fn drafts() {}

    #[utoipa::path(post, path = "/admin/datasets/{id}/publish", tag = "catalog", params(("id" = String, Path, example = "enterprises")),
        request_body = PublishRequest, responses((status = 200, body = Published)))]
    fn publish() {}

    #[utoipa::path(post, path = "/admin/datasets/{id}/withdraw", tag = "catalog", params(("id" = String, Path, example = "enterprises")),
        request_body = ReasonRequest, responses((status = 200, body = WithdrawalView)))]
    fn admin_withdraw() {}

    #[utoipa::path(post, path = "/admin/datasets/{id}/reopen", tag = "catalog", params(("id" = String, Path, example = "enterprises")),
        responses((status = 200, body = Withdrawal)))]
    fn admin_reopen() {}

    #[utoipa::path(get, path = "/admin/datasets/{id}/trace", tag = "audit",
        params(("id" = String, Path, example = "enterprises"), ("since" = Option<DateTime<Utc>>, Query), ("until" = Option<DateTime<Utc>>, Query)),
        responses((status = 200, body = Trace)))]
    fn trace() {}

    #[utoipa::path(get, path = "/admin/audit", tag = "audit", description = "Audit records, one JSON object per line.",
        params(("dataset" = Option<String>, Query), ("principal" = Option<String>, Query),
               ("agreement" = Option<String>, Query), ("since" = Option<DateTime<Utc>>, Query),
               ("until" = Option<DateTime<Utc>>, Query)),
        responses((status = 200, content((String = "application/x-ndjson")))))]
    fn audit() {}

    #[utoipa::path(get, path = "/admin/applications", tag = "workflows",
        params(("status" = Option<policy::ApplicationStatus>, Query)), responses((status = 200, body = ApplicationList)))]
    fn admin_applications() {}

    #[utoipa::path(get, path = "/admin/objections", tag = "workflows",
        params(("status" = Option<policy::ObjectionStatus>, Query), ("dataset" = Option<String>, Query)),
        responses((status = 200, body = ObjectionList)))]
    fn admin_objections() {}

    #[utoipa::path(get, path = "/admin/notifications", tag = "workflows", responses((status = 200, body = NotificationList)))]
    fn notifications() {}

    #[utoipa::path(get, path = "/admin/reports", tag = "workflows", responses((status = 200, body = ReportList)))]
    fn reports() {}

    #[utoipa::path(post, path = "/admin/reload", tag = "operations",
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
