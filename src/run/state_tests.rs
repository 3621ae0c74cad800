//! Data-driven tests of the state machine: scripted inputs, the entries they
//! journal, the effect that follows, and every recovery rule of contract
//! section 4 checked by folding journal prefixes.

use std::collections::HashMap;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::*;
use crate::llm::RequestedCall;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// A run driven by hand: every step's entries are "committed" to `journal`.
struct Sim {
    run_id: Uuid,
    state: RunState,
    journal: Vec<Event>,
    env: Env,
    /// Journal lengths after each step: the commit boundaries.
    commits: Vec<usize>,
    next_id: u128,
}

impl Sim {
    fn new(agent: AgentName, task: &str) -> Sim {
        Sim::with_limit(agent, task, 50)
    }

    fn with_limit(agent: AgentName, task: &str, max_iterations: u32) -> Sim {
        let run_id = Uuid::from_u128(7);
        let first = Event {
            seq: 1,
            agent: Some(agent),
            at: t0(),
            key: "run-started".into(),
            body: EventBody::RunStarted {
                task: task.into(),
                agent,
                approval_timeout_secs: 60,
                trace: None,
                created_by: "alice".into(),
                budget: None,
            },
        };
        Sim {
            run_id,
            state: RunState::start(run_id, &first).unwrap(),
            journal: vec![first],
            env: Env {
                now: t0(),
                fresh_id: Uuid::from_u128(1000),
                jitter: 0.5,
                max_iterations,
                models: std::sync::Arc::new(
                    AgentName::ALL
                        .into_iter()
                        .map(|a| (a, format!("model-{a}")))
                        .collect::<HashMap<_, _>>(),
                ),
                prices: std::sync::Arc::new(
                    Prices::parse(Some(
                        r#"{"model-x": {"input_per_mtok": 1000, "output_per_mtok": 5000}}"#,
                    ))
                    .unwrap(),
                ),
                mcp: Default::default(),
                busy: false,
            },
            commits: vec![1],
            next_id: 1000,
        }
    }

    fn step(&mut self, input: Input) -> Result<Effect, Refusal> {
        self.next_id += 1;
        self.env.fresh_id = Uuid::from_u128(self.next_id);
        let transition = step(&mut self.state, input, &self.env)?;
        self.journal.extend(transition.events);
        self.commits.push(self.journal.len());
        Ok(transition.effect)
    }

    /// The types of the entries the last `n` commits... of the last step.
    fn last_types(&self) -> Vec<&'static str> {
        let from = self.commits[self.commits.len() - 2];
        self.journal[from..]
            .iter()
            .map(|e| e.body.type_name())
            .collect()
    }

    fn types(&self) -> Vec<&'static str> {
        self.journal.iter().map(|e| e.body.type_name()).collect()
    }

    fn answer(&mut self, text: &str, calls: &[(&str, Value)]) -> Result<Effect, Refusal> {
        self.answer_with_ids(
            text,
            calls.iter().map(|(t, a)| (None, *t, a.clone())).collect(),
        )
    }

    fn answer_with_ids(
        &mut self,
        text: &str,
        calls: Vec<(Option<&str>, &str, Value)>,
    ) -> Result<Effect, Refusal> {
        self.step(Input::ModelAnswered {
            answer: ModelAnswer {
                model: "model-x".into(),
                text: text.into(),
                tool_calls: calls
                    .into_iter()
                    .map(|(id, tool, args)| RequestedCall {
                        call_id: id.map(str::to_string),
                        tool: tool.into(),
                        args,
                    })
                    .collect(),
                usage: Usage {
                    input_tokens: 10,
                    output_tokens: 2,
                },
            },
        })
    }

    fn finish_tool(&mut self, effect: &Effect, output: &str) -> Result<Effect, Refusal> {
        let Effect::RunTool { call_id, .. } = effect else {
            panic!("expected RunTool, got {effect:?}");
        };
        self.step(Input::ToolFinished {
            call_id: call_id.clone(),
            outcome: ToolOutcome {
                ok: true,
                output: output.into(),
                exit_code: None,
            },
            duration_ms: 3,
        })
    }

    fn decide(&mut self, approved: bool, feedback: Option<&str>) -> Result<Effect, Refusal> {
        let approval_id = self.state.pending_approval().expect("pending").approval_id;
        self.decide_id(approval_id, approved, feedback)
    }

    fn decide_id(
        &mut self,
        approval_id: Uuid,
        approved: bool,
        feedback: Option<&str>,
    ) -> Result<Effect, Refusal> {
        self.step(Input::Decide {
            approval_id,
            approved,
            feedback: feedback.map(str::to_string),
            decided_by: "test".into(),
            args_sha256: None,
            edited_args: None,
            add_tokens: None,
            add_cost_usd: None,
        })
    }

    /// Approves the pending call naming the hash of the arguments seen, and
    /// perhaps with edited arguments.
    fn approve_seen(&mut self, seen: &str, edited: Option<Value>) -> Result<Effect, Refusal> {
        let approval_id = self.state.pending_approval().expect("pending").approval_id;
        self.step(Input::Decide {
            approval_id,
            approved: true,
            feedback: None,
            decided_by: "bob".into(),
            args_sha256: Some(seen.into()),
            edited_args: edited,
            add_tokens: None,
            add_cost_usd: None,
        })
    }

    /// A fresh state folded from the first `len` entries, as after a crash.
    fn recovered(&self, len: usize) -> Sim {
        let journal = self.journal[..len].to_vec();
        Sim {
            run_id: self.run_id,
            state: fold(self.run_id, &journal).unwrap(),
            journal,
            env: self.env.clone(),
            commits: vec![len],
            next_id: self.next_id + 100,
        }
    }
}

fn model_messages(effect: &Effect) -> &[Message] {
    match effect {
        Effect::CallModel { messages, .. } => messages,
        other => panic!("expected CallModel, got {other:?}"),
    }
}

fn tool_output(event: &Event) -> (&str, bool) {
    match &event.body {
        EventBody::ToolResult { output, ok, .. } => (output, *ok),
        other => panic!("expected TOOL_RESULT, got {other:?}"),
    }
}

#[test]
fn a_run_with_a_safe_tool_completes() {
    let mut sim = Sim::new(AgentName::Coding, "list it");
    assert_eq!(sim.state.status(), RunStatus::Pending);

    let effect = sim.step(Input::Wake).unwrap();
    assert_eq!(sim.last_types(), ["LLM_CALLED"]);
    assert!(matches!(
        effect,
        Effect::CallModel {
            attempt: 1,
            agent: AgentName::Coding,
            ..
        }
    ));
    assert_eq!(sim.state.status(), RunStatus::Running);

    let effect = sim.answer("looking", &[("list_files", json!({}))]).unwrap();
    assert_eq!(
        sim.last_types(),
        ["AGENT_THOUGHT", "TOOL_CALLED", "TOOL_STARTED"]
    );
    let effect = sim.finish_tool(&effect, "a.txt").unwrap();
    assert_eq!(sim.last_types(), ["TOOL_RESULT", "LLM_CALLED"]);
    let messages = model_messages(&effect);
    assert_eq!(messages.len(), 3);
    assert!(
        matches!(&messages[2], Message::ToolResult { output, ok: true, .. } if output == "a.txt")
    );

    let effect = sim.answer("all done", &[]).unwrap();
    assert_eq!(effect, Effect::Finished);
    assert_eq!(sim.last_types(), ["AGENT_THOUGHT", "RUN_COMPLETED"]);
    let summary = sim.state.summary();
    assert_eq!(summary.status, RunStatus::Completed);
    assert_eq!(summary.result.as_deref(), Some("all done"));
    assert_eq!(
        summary.usage["coding"],
        Usage {
            input_tokens: 20,
            output_tokens: 4
        }
    );
    // seq starts at 1 and has no gaps; keys are unique.
    for (i, event) in sim.journal.iter().enumerate() {
        assert_eq!(event.seq, i as i64 + 1);
    }
    let keys: HashSet<&str> = sim.journal.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys.len(), sim.journal.len());
}

#[test]
fn dangerous_tools_wait_for_approval_and_decisions_are_final() {
    let mut sim = Sim::new(AgentName::Coding, "t");
    sim.step(Input::Wake).unwrap();
    let effect = sim
        .answer("run it", &[("shell", json!({"command": "ls"}))])
        .unwrap();
    assert_eq!(
        sim.last_types(),
        ["AGENT_THOUGHT", "TOOL_CALLED", "RUN_SUSPENDED"]
    );
    let pending = sim.state.pending_approval().unwrap().clone();
    assert_eq!(
        effect,
        Effect::AwaitApproval {
            approval_id: pending.approval_id,
            expires_at: t0() + ChronoDuration::seconds(60)
        }
    );
    assert_eq!(sim.state.status(), RunStatus::WaitingApproval);
    assert_eq!(pending.tool, "shell");
    assert_eq!(pending.agent, AgentName::Coding);

    assert_eq!(
        sim.decide_id(Uuid::from_u128(42), true, None),
        Err(Refusal::NoPendingApproval)
    );
    let effect = sim.decide(true, None).unwrap();
    assert_eq!(sim.last_types(), ["RUN_RESUMED", "TOOL_STARTED"]);
    assert!(matches!(effect, Effect::RunTool { ref tool, .. } if tool == "shell"));
    assert_eq!(
        sim.decide_id(pending.approval_id, false, None),
        Err(Refusal::AlreadyDecided)
    );
    sim.finish_tool(&effect, "out").unwrap();
    assert_eq!(sim.last_types(), ["TOOL_RESULT", "LLM_CALLED"]);
}

#[test]
fn an_approval_names_the_arguments_it_saw() {
    let mut sim = Sim::new(AgentName::Coding, "t");
    sim.step(Input::Wake).unwrap();
    let args = json!({"timeout_secs": 5, "command": "ls -la"});
    sim.answer("", &[("shell", args.clone())]).unwrap();
    let pending = sim.state.pending_approval().unwrap().clone();
    assert_eq!(pending.args_sha256, crate::jcs::sha256_hex(&args));
    let EventBody::RunSuspended { args_sha256, .. } = &sim.journal.last().unwrap().body else {
        panic!("the last entry is RUN_SUSPENDED");
    };
    assert_eq!(*args_sha256, pending.args_sha256);

    // Arguments other than the waiting ones: refused, nothing journaled.
    let before = sim.journal.len();
    let other = crate::jcs::sha256_hex(&json!({"command": "rm -rf /"}));
    assert_eq!(sim.approve_seen(&other, None), Err(Refusal::ArgsChanged));
    assert_eq!(sim.journal.len(), before);
    assert_eq!(sim.state.status(), RunStatus::WaitingApproval);

    let effect = sim
        .approve_seen(&pending.args_sha256.to_uppercase(), None)
        .unwrap();
    assert!(matches!(effect, Effect::RunTool { args: ref a, .. } if *a == args));
    assert_eq!(sim.state.created_by, "alice");
}

#[test]
fn edited_arguments_run_and_the_model_is_told() {
    let mut sim = Sim::new(AgentName::Coding, "t");
    sim.step(Input::Wake).unwrap();
    sim.answer("", &[("shell", json!({"command": "rm -rf build"}))])
        .unwrap();
    let seen = sim.state.pending_approval().unwrap().args_sha256.clone();
    let edited = json!({"command": "rm -rf build/tmp"});
    let effect = sim.approve_seen(&seen, Some(edited.clone())).unwrap();
    let resumed = &sim.journal[sim.journal.len() - 2];
    assert!(matches!(
        &resumed.body,
        EventBody::RunResumed { edited_args: Some(a), decided_by, .. } if *a == edited && decided_by == "bob"
    ));
    assert!(matches!(effect, Effect::RunTool { args: ref a, .. } if *a == edited));

    // After a crash while it ran, the human is asked again about the
    // arguments that actually ran.
    let mut recovered = sim.recovered(sim.journal.len());
    recovered.step(Input::Wake).unwrap();
    assert_eq!(
        recovered.last_types(),
        ["TOOL_INTERRUPTED", "RUN_SUSPENDED"]
    );
    let again = recovered.state.pending_approval().unwrap();
    assert_eq!(again.args, edited);
    assert_eq!(again.args_sha256, crate::jcs::sha256_hex(&edited));

    let effect = sim.finish_tool(&effect, "removed").unwrap();
    let (output, _) = tool_output(&sim.journal[sim.journal.len() - 2]);
    assert!(
        output.starts_with("NOTE: a human approver changed the arguments"),
        "{output}"
    );
    assert!(
        output.contains("rm -rf build/tmp") && output.ends_with("removed"),
        "{output}"
    );
    assert!(matches!(
        model_messages(&effect).last(),
        Some(Message::ToolResult { output: o, .. }) if o.contains("did NOT run with the arguments you gave")
    ));
}

#[test]
fn a_rejection_reaches_the_model_as_a_denial_quoting_the_feedback() {
    let mut sim = Sim::new(AgentName::Coding, "t");
    sim.step(Input::Wake).unwrap();
    sim.answer("", &[("write_file", json!({"path": "a", "content": "b"}))])
        .unwrap();
    let effect = sim.decide(false, Some("use notes/ instead")).unwrap();
    assert_eq!(
        sim.last_types(),
        ["RUN_RESUMED", "TOOL_RESULT", "LLM_CALLED"]
    );
    let (output, ok) = tool_output(&sim.journal[sim.journal.len() - 2]);
    assert!(!ok);
    assert!(output.contains("human rejected"), "{output}");
    assert!(output.contains("\"use notes/ instead\""), "{output}");
    assert!(matches!(
        model_messages(&effect).last(),
        Some(Message::ToolResult { ok: false, .. })
    ));
    assert!(!sim.types().contains(&"TOOL_STARTED"));
}

#[test]
fn an_expired_approval_is_a_denial_saying_it_timed_out() {
    let mut sim = Sim::new(AgentName::Coding, "t");
    sim.step(Input::Wake).unwrap();
    sim.answer("", &[("shell", json!({"command": "ls"}))])
        .unwrap();
    let approval_id = sim.state.pending_approval().unwrap().approval_id;

    // A timer that fires early changes nothing and is armed again.
    let effect = sim.step(Input::ApprovalExpired { approval_id }).unwrap();
    assert!(sim.last_types().is_empty());
    assert!(matches!(effect, Effect::AwaitApproval { .. }));

    sim.env.now = t0() + ChronoDuration::seconds(61);
    sim.step(Input::ApprovalExpired { approval_id }).unwrap();
    assert_eq!(
        sim.last_types(),
        ["RUN_RESUMED", "TOOL_RESULT", "LLM_CALLED"]
    );
    let resumed = &sim.journal[sim.journal.len() - 3];
    assert!(matches!(
        &resumed.body,
        EventBody::RunResumed { decision: Decision::Expired, feedback: Some(f), .. } if f == EXPIRED_FEEDBACK
    ));
    let (output, _) = tool_output(&sim.journal[sim.journal.len() - 2]);
    assert!(output.contains("timed out"), "{output}");
    assert_eq!(
        sim.decide_id(approval_id, true, None),
        Err(Refusal::AlreadyDecided)
    );
    assert_eq!(
        sim.step(Input::ApprovalExpired { approval_id }),
        Err(Refusal::Stale)
    );
}

#[test]
fn cancellation_ends_the_run_once_and_late_results_are_dropped() {
    let mut sim = Sim::new(AgentName::Coding, "t");
    sim.step(Input::Wake).unwrap();
    let effect = sim
        .step(Input::Cancel {
            reason: Some("enough".into()),
            by: "test".into(),
        })
        .unwrap();
    assert_eq!(effect, Effect::Finished);
    assert_eq!(sim.last_types(), ["RUN_CANCELLED"]);
    assert_eq!(sim.state.status(), RunStatus::Cancelled);
    assert_eq!(
        sim.step(Input::Cancel {
            reason: None,
            by: "test".into()
        }),
        Err(Refusal::AlreadyFinished)
    );
    assert_eq!(sim.answer("late", &[]), Err(Refusal::Stale));
    assert_eq!(sim.step(Input::Wake), Ok(Effect::Finished));
}

#[test]
fn a_cancelled_run_refuses_its_pending_approval() {
    let mut sim = Sim::new(AgentName::Coding, "t");
    sim.step(Input::Wake).unwrap();
    sim.answer("", &[("shell", json!({"command": "ls"}))])
        .unwrap();
    let approval_id = sim.state.pending_approval().unwrap().approval_id;
    sim.step(Input::Cancel {
        reason: None,
        by: "test".into(),
    })
    .unwrap();
    assert!(sim.state.pending_approval().is_none());
    assert_eq!(
        sim.decide_id(approval_id, true, None),
        Err(Refusal::NoPendingApproval)
    );
}

#[test]
fn several_calls_in_one_answer_run_in_order_each_with_its_own_approval() {
    let mut sim = Sim::new(AgentName::Coding, "t");
    sim.step(Input::Wake).unwrap();
    let effect = sim
        .answer(
            "",
            &[
                ("read_file", json!({"path": "a"})),
                ("shell", json!({"command": "one"})),
                ("shell", json!({"command": "two"})),
            ],
        )
        .unwrap();
    assert_eq!(
        sim.last_types(),
        [
            "AGENT_THOUGHT",
            "TOOL_CALLED",
            "TOOL_CALLED",
            "TOOL_CALLED",
            "TOOL_STARTED"
        ]
    );
    sim.finish_tool(&effect, "A").unwrap();
    assert_eq!(sim.last_types(), ["TOOL_RESULT", "RUN_SUSPENDED"]);
    assert_eq!(sim.state.pending_approval().unwrap().args["command"], "one");
    sim.decide(false, None).unwrap();
    assert_eq!(
        sim.last_types(),
        ["RUN_RESUMED", "TOOL_RESULT", "RUN_SUSPENDED"]
    );
    assert_eq!(sim.state.pending_approval().unwrap().args["command"], "two");
    let effect = sim.decide(true, None).unwrap();
    sim.finish_tool(&effect, "ok").unwrap();
    assert_eq!(sim.last_types(), ["TOOL_RESULT", "LLM_CALLED"]);
}

#[test]
fn delegation_runs_the_child_and_returns_its_answer_once() {
    let mut sim = Sim::new(AgentName::Orchestrator, "fix the bug");
    sim.step(Input::Wake).unwrap();
    let effect = sim
        .answer(
            "",
            &[(
                "delegate",
                json!({"agent": "coding", "task": "fix it in main.rs"}),
            )],
        )
        .unwrap();
    assert_eq!(
        sim.last_types(),
        [
            "AGENT_THOUGHT",
            "TOOL_CALLED",
            "AGENT_STARTED",
            "LLM_CALLED"
        ]
    );
    let Effect::CallModel {
        agent,
        ref messages,
        ref model,
        ..
    } = effect
    else {
        panic!("{effect:?}")
    };
    assert_eq!(agent, AgentName::Coding);
    assert_eq!(model, "model-coding");
    assert_eq!(
        **messages,
        vec![Message::User {
            text: "fix it in main.rs".into()
        }]
    );
    assert_eq!(sim.state.current_agent(), AgentName::Coding);

    let effect = sim.answer("fixed: changed one line", &[]).unwrap();
    assert_eq!(
        sim.last_types(),
        [
            "AGENT_THOUGHT",
            "AGENT_FINISHED",
            "TOOL_RESULT",
            "LLM_CALLED"
        ]
    );
    assert_eq!(sim.state.current_agent(), AgentName::Orchestrator);
    let messages = model_messages(&effect);
    assert!(matches!(
        messages.last(),
        Some(Message::ToolResult { tool, output, ok: true, .. }) if tool == "delegate" && output == "fixed: changed one line"
    ));
    sim.answer("report", &[]).unwrap();
    assert_eq!(sim.last_types(), ["AGENT_THOUGHT", "RUN_COMPLETED"]);
    let usage = sim.state.summary().usage;
    assert_eq!(usage.len(), 2);
    assert_eq!(usage["orchestrator"].input_tokens, 20);
    assert_eq!(usage["coding"].input_tokens, 10);
    let agents: Vec<Option<AgentName>> = sim.journal.iter().map(|e| e.agent).collect();
    assert!(
        agents.iter().all(Option::is_some),
        "every entry names its agent"
    );
}

#[test]
fn bad_tool_calls_become_tool_errors_the_model_reads() {
    for (agent, tool, args, expected) in [
        (
            AgentName::Orchestrator,
            "shell",
            json!({"command": "ls"}),
            "not available",
        ),
        (
            AgentName::Orchestrator,
            "delegate",
            json!({"agent": "orchestrator", "task": "x"}),
            "not an agent you can delegate to",
        ),
        (
            AgentName::Orchestrator,
            "delegate",
            json!({"agent": "coding"}),
            "task",
        ),
        (
            AgentName::Coding,
            "delegate",
            json!({"agent": "coding", "task": "x"}),
            "not available",
        ),
    ] {
        let mut sim = Sim::new(agent, "t");
        sim.step(Input::Wake).unwrap();
        sim.answer("", &[(tool, args)]).unwrap();
        assert_eq!(
            sim.last_types(),
            ["AGENT_THOUGHT", "TOOL_CALLED", "TOOL_RESULT", "LLM_CALLED"]
        );
        let (output, ok) = tool_output(&sim.journal[sim.journal.len() - 2]);
        assert!(!ok && output.contains(expected), "{tool}: {output}");
    }
}

#[test]
fn missing_or_repeated_call_ids_are_made_unique() {
    let mut sim = Sim::new(AgentName::Coding, "t");
    sim.step(Input::Wake).unwrap();
    let effect = sim
        .answer_with_ids(
            "",
            vec![
                (Some("call_a"), "list_files", json!({})),
                (Some("call_a"), "list_files", json!({})),
                (Some(""), "list_files", json!({})),
            ],
        )
        .unwrap();
    let ids: Vec<String> = sim
        .journal
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::ToolCalled { call_id, .. } => Some(call_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(ids, ["call_a", "call_1_1", "call_1_2"]);
    assert!(matches!(effect, Effect::RunTool { call_id, .. } if call_id == "call_a"));
}

#[test]
fn the_iteration_limit_fails_the_run() {
    let mut sim = Sim::with_limit(AgentName::Coding, "t", 2);
    sim.step(Input::Wake).unwrap();
    let effect = sim.answer("", &[("list_files", json!({}))]).unwrap();
    sim.finish_tool(&effect, "x").unwrap();
    let effect = sim.answer("", &[("list_files", json!({}))]).unwrap();
    let effect = sim.finish_tool(&effect, "x").unwrap();
    assert_eq!(effect, Effect::Finished);
    assert_eq!(sim.last_types(), ["TOOL_RESULT", "RUN_FAILED"]);
    assert_eq!(sim.state.summary().error.unwrap().code, "iteration_limit");
}

#[test]
fn model_failures_retry_with_backoff_then_fail_the_run() {
    let server_error = || llm::Error::Status {
        status: 503,
        message: "overloaded".into(),
        retry_after: None,
    };
    let mut sim = Sim::new(AgentName::Coding, "t");
    sim.step(Input::Wake).unwrap();
    for attempt in 1..MAX_MODEL_ATTEMPTS {
        let effect = sim
            .step(Input::ModelFailed {
                error: server_error(),
            })
            .unwrap();
        assert!(sim.last_types().is_empty());
        assert!(matches!(effect, Effect::RetryModelAfter(d) if d <= MAX_BACKOFF));
        let effect = sim.step(Input::Wake).unwrap();
        assert_eq!(sim.last_types(), ["LLM_CALLED"]);
        assert!(matches!(effect, Effect::CallModel { attempt: a, .. } if a == attempt + 1));
    }
    sim.step(Input::ModelFailed {
        error: server_error(),
    })
    .unwrap();
    assert_eq!(sim.last_types(), ["RUN_FAILED"]);
    assert_eq!(sim.state.summary().error.unwrap().code, "llm_error");

    // Retry-After is honoured.
    let mut sim = Sim::new(AgentName::Coding, "t");
    sim.step(Input::Wake).unwrap();
    let effect = sim
        .step(Input::ModelFailed {
            error: llm::Error::Status {
                status: 429,
                message: "slow down".into(),
                retry_after: Some(Duration::from_secs(7)),
            },
        })
        .unwrap();
    assert_eq!(effect, Effect::RetryModelAfter(Duration::from_secs(7)));

    // Other 4xx fail at once, with the provider's message.
    let mut sim = Sim::new(AgentName::Coding, "t");
    sim.step(Input::Wake).unwrap();
    sim.step(Input::ModelFailed {
        error: llm::Error::Status {
            status: 400,
            message: "model not found".into(),
            retry_after: None,
        },
    })
    .unwrap();
    let error = sim.state.summary().error.unwrap();
    assert_eq!(error.code, "llm_error");
    assert!(error.message.contains("model not found"));
}

/// The journal of a run that exercises every kind of entry.
fn full_journal() -> Sim {
    let mut sim = Sim::new(AgentName::Orchestrator, "task");
    sim.step(Input::Wake).unwrap();
    sim.answer(
        "",
        &[("delegate", json!({"agent": "coding", "task": "sub"}))],
    )
    .unwrap();
    let effect = sim
        .answer(
            "",
            &[
                ("read_file", json!({"path": "a"})),
                ("shell", json!({"command": "x"})),
            ],
        )
        .unwrap();
    sim.finish_tool(&effect, "A").unwrap();
    let effect = sim.decide(true, None).unwrap();
    sim.finish_tool(&effect, "done").unwrap();
    sim.answer("", &[("write_file", json!({"path": "b", "content": "c"}))])
        .unwrap();
    sim.decide(false, Some("no")).unwrap();
    sim.answer("child answer", &[]).unwrap();
    sim.answer("final", &[]).unwrap();
    assert_eq!(sim.state.status(), RunStatus::Completed);
    sim
}

#[test]
fn folding_any_committed_prefix_gives_the_same_summary_as_the_live_run() {
    let sim = full_journal();
    let mut live = Sim::new(AgentName::Orchestrator, "task");
    // Replay the same journal entry by entry and compare at every commit.
    for &boundary in &sim.commits {
        for event in &sim.journal[live.journal.len()..boundary] {
            live.state.apply(event);
            live.journal.push(event.clone());
        }
        let folded = fold(sim.run_id, &sim.journal[..boundary]).unwrap();
        assert_eq!(folded.summary(), live.state.summary(), "at {boundary}");
        assert_eq!(folded.last_seq, boundary as i64);
    }
}

#[test]
fn recovery_never_repeats_what_the_journal_holds() {
    let sim = full_journal();
    for &boundary in &sim.commits {
        let mut recovered = sim.recovered(boundary);
        let before = recovered.journal.len();
        let effect = recovered.step(Input::Wake).unwrap();
        let new = &recovered.journal[before..];
        // No second result for a call, nothing after the end.
        for event in new {
            if let EventBody::ToolResult { call_id, .. } = &event.body {
                assert!(
                    !sim.journal[..boundary].iter().any(|e| matches!(&e.body, EventBody::ToolResult { call_id: c, .. } if c == call_id)),
                    "second TOOL_RESULT for {call_id} at {boundary}"
                );
            }
        }
        if boundary == sim.journal.len() {
            assert!(new.is_empty());
            assert_eq!(effect, Effect::Finished);
        }
    }
}

#[test]
fn recovery_rules_of_contract_section_4() {
    // A run waiting for approval keeps waiting with its original deadline.
    let mut sim = Sim::new(AgentName::Coding, "t");
    sim.step(Input::Wake).unwrap();
    sim.answer("", &[("shell", json!({"command": "x"}))])
        .unwrap();
    let pending = sim.state.pending_approval().unwrap().clone();
    let mut recovered = sim.recovered(sim.journal.len());
    recovered.env.now = t0() + ChronoDuration::seconds(30);
    let effect = recovered.step(Input::Wake).unwrap();
    assert!(recovered.last_types().is_empty());
    assert_eq!(
        effect,
        Effect::AwaitApproval {
            approval_id: pending.approval_id,
            expires_at: pending.expires_at
        }
    );

    // An LLM call written but not answered is sent again with attempt + 1.
    let mut sim = Sim::new(AgentName::Coding, "t");
    sim.step(Input::Wake).unwrap();
    let mut recovered = sim.recovered(sim.journal.len());
    let effect = recovered.step(Input::Wake).unwrap();
    assert_eq!(recovered.last_types(), ["LLM_CALLED"]);
    assert!(matches!(effect, Effect::CallModel { attempt: 2, .. }));

    // A safe tool started without a result runs again.
    let mut sim = Sim::new(AgentName::Coding, "t");
    sim.step(Input::Wake).unwrap();
    sim.answer("", &[("list_files", json!({}))]).unwrap();
    let mut recovered = sim.recovered(sim.journal.len());
    let effect = recovered.step(Input::Wake).unwrap();
    assert_eq!(recovered.last_types(), ["TOOL_STARTED"]);
    assert!(matches!(effect, Effect::RunTool { .. }));
    recovered.finish_tool(&effect, "x").unwrap();
    assert_eq!(recovered.last_types(), ["TOOL_RESULT", "LLM_CALLED"]);

    // A dangerous tool started without a result is never run again
    // silently: TOOL_INTERRUPTED, then a new approval marked interrupted.
    let mut sim = Sim::new(AgentName::Coding, "t");
    sim.step(Input::Wake).unwrap();
    sim.answer("", &[("shell", json!({"command": "x"}))])
        .unwrap();
    let old = sim.state.pending_approval().unwrap().approval_id;
    sim.decide(true, None).unwrap();
    assert_eq!(sim.last_types(), ["RUN_RESUMED", "TOOL_STARTED"]);
    let mut recovered = sim.recovered(sim.journal.len());
    recovered.env.now = t0() + ChronoDuration::seconds(5);
    let effect = recovered.step(Input::Wake).unwrap();
    assert_eq!(
        recovered.last_types(),
        ["TOOL_INTERRUPTED", "RUN_SUSPENDED"]
    );
    let last = recovered.journal.last().unwrap().clone();
    let EventBody::RunSuspended {
        approval_id,
        interrupted,
        expires_at,
        call_id,
        ..
    } = &last.body
    else {
        panic!()
    };
    assert!(*interrupted);
    assert_ne!(*approval_id, old);
    assert_eq!(*expires_at, t0() + ChronoDuration::seconds(65));
    assert!(matches!(effect, Effect::AwaitApproval { .. }));
    assert_eq!(
        recovered.decide_id(old, true, None),
        Err(Refusal::AlreadyDecided)
    );
    // Approved again, it runs once more; a second crash asks again.
    let effect = recovered.decide(true, None).unwrap();
    assert!(matches!(effect, Effect::RunTool { call_id: ref c, .. } if c == call_id));
    let mut again = recovered.recovered(recovered.journal.len());
    again.step(Input::Wake).unwrap();
    assert_eq!(again.last_types(), ["TOOL_INTERRUPTED", "RUN_SUSPENDED"]);
    let keys: HashSet<&str> = again.journal.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys.len(), again.journal.len());

    // Nothing happens after a terminal entry.
    let sim = full_journal();
    let mut recovered = sim.recovered(sim.journal.len());
    assert_eq!(recovered.step(Input::Wake), Ok(Effect::Finished));
    assert!(recovered.last_types().is_empty());
}

/// A server `fx` with an approved-but-idempotent tool and a safe-but-not-
/// idempotent one (contract section 12).
fn with_mcp_tools(mut sim: Sim) -> Sim {
    use crate::mcp::{Hazard, McpTool, config::McpConfig};
    let config = McpConfig::parse(r#"{"mcpServers": {"fx": {"command": "fx"}}}"#).unwrap();
    let tool = |name: &str, dangerous, repeatable| McpTool {
        name: name.into(),
        description: String::new(),
        input_schema: json!({"type": "object"}).into(),
        hazard: Hazard {
            dangerous,
            repeatable,
        },
    };
    sim.env.mcp = std::sync::Arc::new(crate::mcp::Mcp::listed(
        &config,
        vec![
            tool("fx__set", true, true),
            tool("fx__delete", false, false),
        ],
    ));
    sim
}

#[test]
fn mcp_tools_are_approved_and_repeated_as_their_annotations_say() {
    // Approved but idempotent: after a crash it simply runs again.
    let mut sim = with_mcp_tools(Sim::new(AgentName::Coding, "t"));
    sim.step(Input::Wake).unwrap();
    sim.answer("", &[("fx__set", json!({"x": 1}))]).unwrap();
    assert!(sim.state.pending_approval().is_some());
    sim.decide(true, None).unwrap();
    assert_eq!(sim.last_types(), ["RUN_RESUMED", "TOOL_STARTED"]);
    let mut recovered = sim.recovered(sim.journal.len());
    let effect = recovered.step(Input::Wake).unwrap();
    assert_eq!(recovered.last_types(), ["TOOL_STARTED"]);
    assert!(matches!(effect, Effect::RunTool { ref tool, .. } if tool == "fx__set"));

    // Safe (no approval) but not idempotent: after a crash a human decides.
    let mut sim = with_mcp_tools(Sim::new(AgentName::Coding, "t"));
    sim.step(Input::Wake).unwrap();
    sim.answer("", &[("fx__delete", json!({"id": "a"}))])
        .unwrap();
    assert_eq!(
        sim.last_types(),
        ["AGENT_THOUGHT", "TOOL_CALLED", "TOOL_STARTED"]
    );
    let called = &sim.journal[sim.journal.len() - 2].body;
    assert!(matches!(
        called,
        EventBody::ToolCalled {
            dangerous: false,
            repeatable: Some(false),
            ..
        }
    ));
    let mut recovered = sim.recovered(sim.journal.len());
    let effect = recovered.step(Input::Wake).unwrap();
    assert_eq!(
        recovered.last_types(),
        ["TOOL_INTERRUPTED", "RUN_SUSPENDED"]
    );
    assert!(matches!(effect, Effect::AwaitApproval { .. }));
    // Rejected, the model reads that it did not run again.
    recovered.decide(false, Some("it ran already")).unwrap();
    assert_eq!(
        recovered.last_types(),
        ["RUN_RESUMED", "TOOL_RESULT", "LLM_CALLED"]
    );

    // A tool of the server that is not listed is treated most carefully.
    let mut sim = with_mcp_tools(Sim::new(AgentName::Coding, "t"));
    sim.step(Input::Wake).unwrap();
    sim.answer("", &[("fx__unknown", json!({}))]).unwrap();
    assert!(sim.state.pending_approval().is_some());
    let called = sim
        .journal
        .iter()
        .find(|e| matches!(e.body, EventBody::ToolCalled { .. }))
        .unwrap();
    // Dangerous and not repeatable is the built-in default: not written.
    assert!(matches!(
        called.body,
        EventBody::ToolCalled {
            dangerous: true,
            repeatable: None,
            ..
        }
    ));
}

#[test]
fn a_crash_inside_a_delegated_agent_resumes_in_that_agent() {
    let mut sim = Sim::new(AgentName::Orchestrator, "t");
    sim.step(Input::Wake).unwrap();
    sim.answer(
        "",
        &[("delegate", json!({"agent": "log-analyzer", "task": "look"}))],
    )
    .unwrap();
    let mut recovered = sim.recovered(sim.journal.len());
    let effect = recovered.step(Input::Wake).unwrap();
    assert!(matches!(
        effect,
        Effect::CallModel {
            agent: AgentName::LogAnalyzer,
            attempt: 2,
            ..
        }
    ));
    recovered.answer("found it", &[]).unwrap();
    assert_eq!(
        recovered.last_types(),
        [
            "AGENT_THOUGHT",
            "AGENT_FINISHED",
            "TOOL_RESULT",
            "LLM_CALLED"
        ]
    );
    let results = recovered
        .journal
        .iter()
        .filter(|e| e.body.type_name() == "TOOL_RESULT")
        .count();
    assert_eq!(results, 1);
}

// Operator control (contract section 11).

impl Sim {
    fn busy_step(&mut self, input: Input) -> Result<Effect, Refusal> {
        self.env.busy = true;
        let effect = self.step(input);
        self.env.busy = false;
        effect
    }

    fn with_budget(agent: AgentName, budget: Budget) -> Sim {
        let mut sim = Sim::new(agent, "spend");
        let EventBody::RunStarted { budget: b, .. } = &mut sim.journal[0].body else {
            unreachable!()
        };
        *b = Some(budget);
        sim.state = fold(sim.run_id, &sim.journal).unwrap();
        sim
    }

    fn raise(&mut self, tokens: Option<u64>, usd: Option<f64>) -> Result<Effect, Refusal> {
        let approval_id = self.state.pending_approval().expect("pending").approval_id;
        self.step(Input::Decide {
            approval_id,
            approved: true,
            feedback: None,
            decided_by: "carol".into(),
            args_sha256: None,
            edited_args: None,
            add_tokens: tokens,
            add_cost_usd: usd,
        })
    }

    /// A fork of this run at `at_seq`, driven by hand from its first step.
    fn fork_at(&self, at_seq: usize, message: Option<&str>) -> (Sim, Effect) {
        let env = Env {
            fresh_id: Uuid::from_u128(self.next_id + 500),
            ..self.env.clone()
        };
        let fork_id = Uuid::from_u128(99);
        let (mut state, transition) = fork(
            &self.journal[..at_seq],
            Fork {
                run_id: fork_id,
                from_run_id: self.run_id,
                from_seq: at_seq as i64,
                by: "dave".into(),
                trace: TraceRef {
                    trace_id: "f".repeat(32),
                    span_id: "e".repeat(16),
                    parent_span_id: None,
                    sampled: true,
                },
                message: message.map(str::to_string),
            },
            &env,
        )
        .unwrap();
        let mut journal = self.journal[..at_seq].to_vec();
        journal.extend(transition.events);
        assert_eq!(transition.effect, Effect::Continue);
        let mut sim = Sim {
            run_id: fork_id,
            state: state.clone(),
            journal,
            env,
            commits: vec![at_seq],
            next_id: self.next_id + 600,
        };
        sim.commits.push(sim.journal.len());
        let effect = sim.step(Input::Wake).unwrap();
        // The fork's fold is the state that drove it.
        let refolded = fold(fork_id, &sim.journal).unwrap();
        assert_eq!(refolded.summary(), sim.state.summary());
        state = refolded;
        assert_eq!(state.created_by, "dave");
        assert_eq!(state.trace.trace_id, "f".repeat(32));
        (sim, effect)
    }
}

fn user_texts(messages: &[Message]) -> Vec<&str> {
    messages
        .iter()
        .filter_map(|m| match m {
            Message::User { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn an_operator_message_is_read_before_the_next_model_call() {
    let mut sim = Sim::new(AgentName::Coding, "list it");
    sim.step(Input::Wake).unwrap();
    // Sent while the model call is out: journaled, nothing else happens.
    let effect = sim
        .busy_step(Input::Message {
            text: "use ls -la".into(),
            by: "olga".into(),
        })
        .unwrap();
    assert_eq!(effect, Effect::Working);
    assert_eq!(sim.last_types(), ["OPERATOR_MESSAGE"]);
    let EventBody::OperatorMessage { text, by } = &sim.journal.last().unwrap().body else {
        unreachable!()
    };
    assert_eq!((text.as_str(), by.as_str()), ("use ls -la", "olga"));

    let effect = sim.answer("looking", &[("list_files", json!({}))]).unwrap();
    let effect = sim.finish_tool(&effect, "a.txt").unwrap();
    // After the tool's result, in the next call, as a user message.
    let messages = model_messages(&effect);
    assert!(matches!(
        messages[messages.len() - 2],
        Message::ToolResult { .. }
    ));
    let Message::User { text } = messages.last().unwrap() else {
        panic!("{messages:?}")
    };
    assert!(
        text.contains("use ls -la") && text.contains("olga"),
        "{text}"
    );
    // Read once: the call after holds it where it was, not again.
    let effect = sim.answer("more", &[("list_files", json!({}))]).unwrap();
    let effect = sim.finish_tool(&effect, "b.txt").unwrap();
    let texts = user_texts(model_messages(&effect));
    assert_eq!(texts.iter().filter(|t| t.contains("use ls -la")).count(), 1);
    // A second message gets its own key; a finished run refuses one.
    sim.busy_step(Input::Message {
        text: "wrap up".into(),
        by: "olga".into(),
    })
    .unwrap();
    let keys: Vec<&str> = sim.journal.iter().map(|e| e.key.as_str()).collect();
    assert!(keys.contains(&"message:1") && keys.contains(&"message:2"));
    sim.answer("done", &[]).unwrap();
    assert_eq!(sim.last_types(), ["AGENT_THOUGHT", "LLM_CALLED"]);
    sim.answer("done, wrapped up", &[]).unwrap();
    assert_eq!(sim.state.status(), RunStatus::Completed);
    assert_eq!(
        sim.step(Input::Message {
            text: "late".into(),
            by: "olga".into()
        }),
        Err(Refusal::AlreadyFinished)
    );
}

#[test]
fn a_message_to_a_waiting_run_is_read_after_the_decision() {
    let mut sim = Sim::new(AgentName::Coding, "clean up");
    sim.step(Input::Wake).unwrap();
    sim.answer("", &[("shell", json!({"command": "rm -r build"}))])
        .unwrap();
    let effect = sim
        .step(Input::Message {
            text: "keep the logs".into(),
            by: "olga".into(),
        })
        .unwrap();
    assert!(matches!(effect, Effect::AwaitApproval { .. }), "{effect:?}");
    assert_eq!(sim.state.status(), RunStatus::WaitingApproval);
    let effect = sim.decide(true, None).unwrap();
    let effect = sim.finish_tool(&effect, "").unwrap();
    let texts = user_texts(model_messages(&effect));
    assert!(texts.last().unwrap().contains("keep the logs"));
}

#[test]
fn a_message_reaches_a_delegated_agent_that_already_answered() {
    let mut sim = Sim::new(AgentName::Orchestrator, "fix");
    sim.step(Input::Wake).unwrap();
    sim.answer("", &[("delegate", json!({"agent": "coding", "task": "t"}))])
        .unwrap();
    sim.busy_step(Input::Message {
        text: "also add a test".into(),
        by: "olga".into(),
    })
    .unwrap();
    // The child answered without reading it: it reads it before it is done.
    let effect = sim.answer("fixed", &[]).unwrap();
    assert_eq!(sim.last_types(), ["AGENT_THOUGHT", "LLM_CALLED"]);
    let Effect::CallModel {
        agent, messages, ..
    } = &effect
    else {
        panic!("{effect:?}")
    };
    assert_eq!(*agent, AgentName::Coding);
    assert!(
        matches!(&messages[messages.len() - 2], Message::Assistant { text, .. } if text == "fixed")
    );
    sim.answer("fixed, with a test", &[]).unwrap();
    assert_eq!(
        sim.last_types(),
        [
            "AGENT_THOUGHT",
            "AGENT_FINISHED",
            "TOOL_RESULT",
            "LLM_CALLED"
        ]
    );
}

#[test]
fn pause_holds_new_work_lets_work_in_flight_finish_and_survives_a_fold() {
    let mut sim = Sim::new(AgentName::Coding, "list it");
    sim.step(Input::Wake).unwrap();
    let effect = sim
        .busy_step(Input::Pause {
            reason: Some("lunch".into()),
            by: "olga".into(),
        })
        .unwrap();
    assert_eq!(effect, Effect::Paused);
    assert_eq!(sim.last_types(), ["RUN_PAUSED"]);
    assert_eq!(sim.state.status(), RunStatus::Paused);
    assert_eq!(
        sim.step(Input::Pause {
            reason: None,
            by: "olga".into()
        }),
        Err(Refusal::AlreadyPaused)
    );
    // The call in flight comes back: journaled, and its tool does not start.
    let effect = sim.answer("looking", &[("list_files", json!({}))]).unwrap();
    assert_eq!(effect, Effect::Paused);
    assert_eq!(sim.last_types(), ["AGENT_THOUGHT", "TOOL_CALLED"]);
    // Folded again (after a restart), still paused, and a wake does nothing.
    let mut again = sim.recovered(sim.journal.len());
    assert_eq!(again.state.status(), RunStatus::Paused);
    assert_eq!(again.step(Input::Wake).unwrap(), Effect::Paused);
    assert_eq!(again.journal.len(), sim.journal.len());
    // Unpaused, it goes on where it stopped.
    let effect = again.step(Input::Unpause { by: "olga".into() }).unwrap();
    assert_eq!(again.last_types(), ["RUN_UNPAUSED", "TOOL_STARTED"]);
    assert!(matches!(effect, Effect::RunTool { .. }));
    assert_eq!(
        again.step(Input::Unpause { by: "olga".into() }),
        Err(Refusal::NotPaused)
    );
    assert_eq!(again.state.status(), RunStatus::Running);
}

#[test]
fn a_paused_run_that_crashed_mid_call_calls_again_once_unpaused() {
    let mut sim = Sim::new(AgentName::Coding, "list it");
    sim.step(Input::Wake).unwrap();
    sim.busy_step(Input::Pause {
        reason: None,
        by: "olga".into(),
    })
    .unwrap();
    // The answer never came (killed): unpausing re-sends the call.
    let mut again = sim.recovered(sim.journal.len());
    let effect = again.step(Input::Unpause { by: "olga".into() }).unwrap();
    assert!(
        matches!(effect, Effect::CallModel { attempt: 2, .. }),
        "{effect:?}"
    );
}

#[test]
fn a_budget_in_tokens_waits_for_an_approver_who_raises_it() {
    let mut sim = Sim::with_budget(
        AgentName::Coding,
        Budget {
            max_tokens: Some(20),
            max_cost_usd: None,
        },
    );
    sim.step(Input::Wake).unwrap();
    let effect = sim.answer("a", &[("list_files", json!({}))]).unwrap();
    // 12 tokens used of 20: the next call goes out.
    let effect = sim.finish_tool(&effect, "x").unwrap();
    assert!(matches!(effect, Effect::CallModel { .. }));
    let effect = sim.answer("b", &[("list_files", json!({}))]).unwrap();
    // 24 of 20: the call about to start waits for an approver instead.
    let effect = sim.finish_tool(&effect, "y").unwrap();
    assert_eq!(sim.last_types(), ["TOOL_RESULT", "BUDGET_EXCEEDED"]);
    assert!(matches!(effect, Effect::AwaitApproval { .. }));
    let EventBody::BudgetExceeded {
        used_tokens,
        max_tokens,
        ..
    } = &sim.journal.last().unwrap().body
    else {
        unreachable!()
    };
    assert_eq!((*used_tokens, *max_tokens), (24, Some(20)));
    let summary = sim.state.summary();
    assert_eq!(summary.status, RunStatus::WaitingApproval);
    let pending = summary.pending_approval.unwrap();
    assert_eq!(pending.kind, ApprovalKind::Budget);
    assert_eq!(pending.tool, BUDGET_TOOL);
    assert_eq!(pending.args["used_tokens"], 24);
    assert_eq!(summary.budget.unwrap().used_tokens, 24);

    // Without more budget, with arguments, or too little: refused.
    assert!(matches!(sim.raise(None, None), Err(Refusal::Invalid(_))));
    assert!(matches!(sim.raise(Some(4), None), Err(Refusal::Invalid(_))));
    assert!(matches!(sim.decide_with_args(), Err(Refusal::Invalid(_))));
    let effect = sim.raise(Some(100), None).unwrap();
    assert_eq!(sim.last_types(), ["BUDGET_RAISED", "LLM_CALLED"]);
    assert!(matches!(effect, Effect::CallModel { .. }));
    let EventBody::BudgetRaised { max_tokens, by, .. } = &sim.journal[sim.journal.len() - 2].body
    else {
        unreachable!()
    };
    assert_eq!((*max_tokens, by.as_str()), (Some(120), "carol"));
    assert_eq!(sim.state.summary().budget.unwrap().max_tokens, Some(120));
    // The fold agrees.
    let folded = fold(sim.run_id, &sim.journal).unwrap();
    assert_eq!(folded.summary(), sim.state.summary());
}

#[test]
fn a_budget_in_usd_rejected_or_expired_fails_the_run() {
    for expire in [false, true] {
        let mut sim = Sim::with_budget(
            AgentName::Coding,
            Budget {
                max_tokens: None,
                max_cost_usd: Some(0.03),
            },
        );
        sim.step(Input::Wake).unwrap();
        let effect = sim.answer("a", &[("list_files", json!({}))]).unwrap();
        let effect = sim.finish_tool(&effect, "x").unwrap();
        assert!(matches!(effect, Effect::CallModel { .. }));
        assert!((sim.state.summary().cost_usd - 0.02).abs() < 1e-12);
        let effect = sim.answer("b", &[("list_files", json!({}))]).unwrap();
        sim.finish_tool(&effect, "y").unwrap();
        assert_eq!(sim.last_types(), ["TOOL_RESULT", "BUDGET_EXCEEDED"]);
        let pending = sim.state.pending_approval().unwrap().clone();
        // A tool's `add_*` does not apply to it, nor edits.
        if expire {
            sim.env.now = pending.expires_at;
            sim.step(Input::ApprovalExpired {
                approval_id: pending.approval_id,
            })
            .unwrap();
        } else {
            sim.decide(false, Some("enough")).unwrap();
        }
        assert_eq!(sim.last_types(), ["RUN_RESUMED", "RUN_FAILED"]);
        let summary = sim.state.summary();
        assert_eq!(summary.status, RunStatus::Failed);
        assert_eq!(summary.error.unwrap().code, "budget_exceeded");
    }
}

#[test]
fn a_tool_approval_refuses_more_budget() {
    let mut sim = Sim::new(AgentName::Coding, "clean up");
    sim.step(Input::Wake).unwrap();
    sim.answer("", &[("shell", json!({"command": "true"}))])
        .unwrap();
    assert!(matches!(
        sim.raise(Some(10), None),
        Err(Refusal::Invalid(_))
    ));
}

impl Sim {
    fn decide_with_args(&mut self) -> Result<Effect, Refusal> {
        let approval_id = self.state.pending_approval().expect("pending").approval_id;
        self.step(Input::Decide {
            approval_id,
            approved: true,
            feedback: None,
            decided_by: "carol".into(),
            args_sha256: None,
            edited_args: Some(json!({"command": "x"})),
            add_tokens: Some(100),
            add_cost_usd: None,
        })
    }
}

/// A run of the orchestrator that delegates, whose coding agent runs a
/// safe tool and an approved shell command: every kind of entry a fork can
/// be taken at.
fn forkable() -> Sim {
    let mut sim = Sim::new(AgentName::Orchestrator, "fix");
    sim.step(Input::Wake).unwrap();
    sim.answer("", &[("delegate", json!({"agent": "coding", "task": "t"}))])
        .unwrap();
    let effect = sim.answer("", &[("list_files", json!({}))]).unwrap();
    sim.finish_tool(&effect, "a.txt").unwrap();
    sim.answer("", &[("shell", json!({"command": "make"}))])
        .unwrap();
    let effect = sim.decide(true, None).unwrap();
    sim.finish_tool(&effect, "built").unwrap();
    sim.answer("made it", &[]).unwrap();
    sim.answer("all done", &[]).unwrap();
    assert_eq!(sim.state.status(), RunStatus::Completed);
    sim
}

fn seq_of(sim: &Sim, ty: &str, nth: usize) -> usize {
    sim.journal
        .iter()
        .filter(|e| e.body.type_name() == ty)
        .nth(nth)
        .unwrap()
        .seq as usize
}

#[test]
fn a_fork_at_any_entry_never_redoes_what_it_copied() {
    let source = forkable();
    let last = source.journal.len();
    for at in 1..last {
        let (fork, effect) = source.fork_at(at, None);
        let copied = &fork.journal[..at];
        assert_eq!(copied, &source.journal[..at]);
        assert_eq!(fork.journal[at].body.type_name(), "RUN_FORKED");
        assert_eq!(fork.state.forked_from.unwrap().seq, at as i64);
        // Whatever the fork does first is never a result the copies hold.
        let done: HashSet<String> = copied
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::ToolResult { call_id, .. } => Some(call_id.clone()),
                _ => None,
            })
            .collect();
        match &effect {
            Effect::RunTool { call_id, .. } => assert!(!done.contains(call_id), "at {at}"),
            Effect::CallModel { .. } => {
                // Only a call without an answer in the copies is (re)sent.
                let answered = copied
                    .iter()
                    .filter(|e| e.body.type_name() == "AGENT_THOUGHT")
                    .count();
                let called = copied
                    .iter()
                    .filter(|e| e.body.type_name() == "LLM_CALLED")
                    .count();
                let new_calls = fork.journal[at..]
                    .iter()
                    .filter(|e| e.body.type_name() == "LLM_CALLED")
                    .count();
                assert_eq!(new_calls, 1, "at {at}");
                assert!(called == answered || called == answered + 1, "at {at}");
            }
            Effect::AwaitApproval { approval_id, .. } => {
                // Asked again, with an id of the fork's own.
                assert!(
                    copied
                        .iter()
                        .all(|e| !e.key.contains(&approval_id.to_string()))
                );
            }
            // At the top agent's final answer: done, with that answer.
            Effect::Finished => {
                assert_eq!(at, last - 1);
                assert_eq!(fork.types()[at..], ["RUN_FORKED", "RUN_COMPLETED"]);
            }
            other => panic!("at {at}: {other:?}"),
        }
        // No second result for a call, no entry key twice.
        let mut keys = HashSet::new();
        for e in &fork.journal {
            assert!(keys.insert(e.key.clone()), "at {at}: key {} twice", e.key);
        }
    }
    // At the final entry: refused.
    let refused = fork(
        &source.journal,
        Fork {
            run_id: Uuid::from_u128(5),
            from_run_id: source.run_id,
            from_seq: last as i64,
            by: "dave".into(),
            trace: source.state.trace.clone(),
            message: None,
        },
        &source.env,
    );
    assert!(matches!(refused, Err(Refusal::Invalid(_))));
}

#[test]
fn a_fork_at_a_pending_approval_asks_again_and_one_at_an_answer_goes_on() {
    let source = forkable();
    // At the RUN_SUSPENDED of `make`: a new approval, the old id unknown.
    let at = seq_of(&source, "RUN_SUSPENDED", 0);
    let (mut fork, effect) = source.fork_at(at, Some("be careful"));
    assert_eq!(
        fork.types()[at..],
        ["RUN_FORKED", "OPERATOR_MESSAGE", "RUN_SUSPENDED"]
    );
    let Effect::AwaitApproval { approval_id, .. } = effect else {
        panic!("{effect:?}")
    };
    let EventBody::RunSuspended {
        approval_id: old, ..
    } = &source.journal[at - 1].body
    else {
        unreachable!()
    };
    assert_ne!(approval_id, *old);
    assert_eq!(
        fork.decide_id(*old, true, None),
        Err(Refusal::NoPendingApproval)
    );
    let effect = fork.decide(true, None).unwrap();
    let Effect::RunTool { tool, .. } = &effect else {
        panic!("{effect:?}")
    };
    assert_eq!(tool, "shell");
    // The message is read by the acting agent (coding) after the result.
    let effect = fork.finish_tool(&effect, "built again").unwrap();
    let texts = user_texts(model_messages(&effect));
    assert!(texts.last().unwrap().contains("be careful"));

    // At the RUN_RESUMED: approved there, so the command just runs.
    let at = seq_of(&source, "RUN_RESUMED", 0);
    let (fork, effect) = source.fork_at(at, None);
    assert!(matches!(effect, Effect::RunTool { ref tool, .. } if tool == "shell"));
    assert_eq!(fork.types()[at..], ["RUN_FORKED", "TOOL_STARTED"]);

    // At the TOOL_STARTED of the approved command: it may have run in the
    // source, so a human decides again.
    let at = seq_of(&source, "TOOL_STARTED", 1);
    let (fork, _) = source.fork_at(at, None);
    assert_eq!(
        fork.types()[at..],
        ["RUN_FORKED", "TOOL_INTERRUPTED", "RUN_SUSPENDED"]
    );

    // At the coding agent's final answer: its result goes up without a
    // new call of the coding agent.
    let at = seq_of(&source, "AGENT_THOUGHT", 3);
    let (fork, effect) = source.fork_at(at, None);
    assert_eq!(
        fork.types()[at..],
        ["RUN_FORKED", "AGENT_FINISHED", "TOOL_RESULT", "LLM_CALLED"]
    );
    assert!(matches!(
        effect,
        Effect::CallModel {
            agent: AgentName::Orchestrator,
            ..
        }
    ));
    // Between AGENT_FINISHED and its TOOL_RESULT: the answer is not redone.
    let at = seq_of(&source, "AGENT_FINISHED", 0);
    let (fork, _) = source.fork_at(at, None);
    assert_eq!(
        fork.types()[at..],
        ["RUN_FORKED", "TOOL_RESULT", "LLM_CALLED"]
    );
    // Between an AGENT_THOUGHT and its TOOL_CALLED: the call is recorded,
    // the model not asked again.
    let at = seq_of(&source, "AGENT_THOUGHT", 1);
    let (fork, _) = source.fork_at(at, None);
    assert_eq!(
        fork.types()[at..],
        ["RUN_FORKED", "TOOL_CALLED", "TOOL_STARTED"]
    );
}

#[test]
fn a_fork_of_a_fork_has_keys_of_its_own() {
    let source = forkable();
    let (first, _) = source.fork_at(seq_of(&source, "TOOL_RESULT", 0), Some("again"));
    // Past the first fork's own RUN_FORKED and message.
    let at = first.journal.len();
    let (second, _) = first.fork_at(at, None);
    let forked: Vec<&str> = second
        .journal
        .iter()
        .filter(|e| e.body.type_name() == "RUN_FORKED")
        .map(|e| e.key.as_str())
        .collect();
    assert_eq!(forked.len(), 2);
    assert_ne!(forked[0], forked[1]);
    let mut keys = HashSet::new();
    assert!(second.journal.iter().all(|e| keys.insert(e.key.clone())));
}
