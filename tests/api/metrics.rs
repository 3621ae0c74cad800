//! `GET /metrics` after a run with tokens, tools, an approval and a
//! rejection: every metric of contract section 8 with its labels and counts.

use std::collections::BTreeMap;

use serde_json::json;

use crate::helpers::spawn_app;
use crate::mock_llm::Reply;

/// One sample: the metric's name, its labels, its value.
pub type Sample = (String, BTreeMap<String, String>, f64);

pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap();
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect();
            (name.to_string(), labels, value.parse().unwrap())
        })
        .collect()
}

pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
}

#[actix_web::test]
async fn metrics_count_tokens_tools_approvals_and_runs() {
    let app = spawn_app().await;
    let api = app.api();
    app.llm
        .push(Reply::tool_call("c1", "list_files", json!({})));
    app.llm
        .push(Reply::tool_call("c2", "shell", json!({"command": "true"})));
    app.llm.push(Reply::tool_call(
        "c3",
        "write_file",
        json!({"path": "a", "content": "b"}),
    ));
    app.llm.push(Reply::text("done"));
    let run = api
        .create_run(json!({"task": "t", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap();
    let shell = api.wait_for_approval(id).await;
    api.resume(id, shell["approval_id"].as_str().unwrap(), "approved", None)
        .await;
    let write = crate::helpers::wait_until("the write approval", || async {
        let run = api.run(id).await;
        (run["pending_approval"]["tool"] == "write_file").then(|| run["pending_approval"].clone())
    })
    .await;
    let waiting = parse(&api.get("/metrics").await.text().await.unwrap());
    assert_eq!(value(&waiting, "agentops_hitl_pending", &[]), 1.0);
    assert_eq!(
        value(
            &waiting,
            "agentops_runs_active",
            &[("status", "waiting_approval")]
        ),
        1.0
    );

    api.resume(
        id,
        write["approval_id"].as_str().unwrap(),
        "rejected",
        Some("no"),
    )
    .await;
    api.wait_for_status(id, "completed").await;

    let response = api.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let samples = parse(&response.text().await.unwrap());
    let model = [
        ("agent", "coding"),
        ("model", "mock-model"),
        ("provider", "openai"),
    ];
    let with = |extra: (&'static str, &'static str)| {
        let mut labels = model.to_vec();
        labels.push(extra);
        labels
    };
    // Three tool-call answers (20 + 7 each) and one text answer (11 + 5).
    assert_eq!(
        value(
            &samples,
            "agentops_llm_tokens_total",
            &with(("type", "input"))
        ),
        71.0
    );
    assert_eq!(
        value(
            &samples,
            "agentops_llm_tokens_total",
            &with(("type", "output"))
        ),
        26.0
    );
    assert_eq!(
        value(
            &samples,
            "agentops_llm_request_duration_seconds_count",
            &with(("outcome", "ok"))
        ),
        4.0
    );
    let tool = |tool: &str, outcome: &str| {
        value(
            &samples,
            "agentops_tool_executions_total",
            &[("agent", "coding"), ("tool", tool), ("outcome", outcome)],
        )
    };
    assert_eq!(tool("list_files", "ok"), 1.0);
    assert_eq!(tool("shell", "ok"), 1.0);
    assert_eq!(tool("write_file", "rejected"), 1.0);
    assert_eq!(
        value(
            &samples,
            "agentops_tool_duration_seconds_count",
            &[("tool", "shell")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "agentops_hitl_wait_seconds_count",
            &[("tool", "shell"), ("decision", "approved")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "agentops_hitl_wait_seconds_count",
            &[("tool", "write_file"), ("decision", "rejected")]
        ),
        1.0
    );
    assert_eq!(value(&samples, "agentops_hitl_pending", &[]), 0.0);
    for status in ["pending", "running", "waiting_approval"] {
        assert_eq!(
            value(&samples, "agentops_runs_active", &[("status", status)]),
            0.0
        );
    }
    assert_eq!(
        value(
            &samples,
            "agentops_runs_finished_total",
            &[("status", "completed")]
        ),
        1.0
    );
    assert!(value(&samples, "agentops_journal_append_seconds_count", &[]) >= 6.0);
    assert!(
        samples
            .iter()
            .any(|(n, l, _)| n == "agentops_journal_append_seconds_bucket"
                && l.get("le").map(String::as_str) == Some("0.001")),
        "millisecond buckets for journal writes"
    );
}
