use super::*;

#[tokio::test]
async fn a_failed_task_makes_healthz_fail_and_names_it() {
    let state = AppState::watch_only(Arc::new(StatusBoard::default()), Duration::from_secs(10));
    let answer = healthz(State(state.clone())).await;
    assert_eq!(answer.status(), StatusCode::OK);

    state.supervisor.fail(
        "dispatcher",
        "panicked: overflow when adding duration".into(),
    );
    let answer = healthz(State(state)).await;
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = axum::body::to_bytes(answer.into_body(), 1 << 16)
        .await
        .unwrap();
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains("the dispatcher task failed: panicked: overflow"),
        "{body}"
    );
}

#[test]
fn the_bearer_scheme_is_read_in_any_case() {
    let with = |value: &str| {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        bearer(&headers).map(str::to_string)
    };
    assert_eq!(with("Bearer t0ken").as_deref(), Some("t0ken"));
    assert_eq!(with("bearer t0ken").as_deref(), Some("t0ken"));
    assert_eq!(with("BEARER  t0ken").as_deref(), Some("t0ken"));
    assert_eq!(with("Basic dXNlcjpwYXNz"), None);
    assert_eq!(with("Bearer"), None);
    assert_eq!(bearer(&HeaderMap::new()), None);
}
