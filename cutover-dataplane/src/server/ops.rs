//! What each control request does to the router, the listeners and the table (`dispatch`), and
//! the bookkeeping of switched-out generations (`retire`, `drain`).

use super::*;

fn handed_over_answer() -> Answer {
    Answer::error(
        ErrorKind::HandedOver,
        "this data plane is handing over to a newer one; reconnect to control.sock",
    )
}

pub(super) async fn dispatch(shared: &Shared, op: Op) -> Answer {
    if op.mutates() && shared.handing_over.load(Ordering::SeqCst) {
        return handed_over_answer();
    }
    match op {
        Op::Hello => {
            let state = shared.state.lock().await;
            let mut listeners: Vec<ListenerInfo> = state
                .listeners
                .iter()
                .map(|(kind, l)| ListenerInfo {
                    kind: kind.clone(),
                    addr: l.addr,
                })
                .collect();
            listeners.sort_by_key(|l| (l.kind != ListenerKind::Main, l.addr));
            Answer::ok(Hello {
                pid: std::process::id(),
                started_at_ms: shared.started_at_ms,
                version: env!("CARGO_PKG_VERSION").to_owned(),
                listeners,
                routes: shared.router.routes().len(),
                took_over_from: shared.took_over_from,
            })
        }
        Op::Listen { kind, addr } => listen(shared, kind, addr).await,
        Op::Metrics => Answer::ok(shared.router.encode_metrics()),
        Op::Configure { edge } => {
            let settings = match edge.to_settings() {
                Ok(s) => s,
                Err(e) => return Answer::error(ErrorKind::BadRequest, e),
            };
            let mut state = shared.state.lock().await;
            if shared.handing_over.load(Ordering::SeqCst) {
                return handed_over_answer();
            }
            if let Err(e) = shared.router.set_edge(settings) {
                return Answer::error(ErrorKind::Failed, display_chain(&e));
            }
            state.edge = edge;
            shared.persist(&state);
            Answer::ok(())
        }
        Op::Close { kind } => {
            let mut state = shared.state.lock().await;
            if shared.handing_over.load(Ordering::SeqCst) {
                return handed_over_answer();
            }
            if let Some(live) = state.listeners.remove(&kind) {
                tracing::info!(?kind, addr = %live.addr, "closing listener");
                let task = live.stop();
                state.draining.retain(|t| !t.is_finished());
                state.draining.push(task);
                shared.persist(&state);
            }
            Answer::ok(())
        }
        Op::Switch {
            app,
            env,
            service,
            version,
            upstreams,
        } => {
            let key = match route_key(&app, &env, &service) {
                Ok(k) => k,
                Err(a) => return a,
            };
            let mut state = shared.state.lock().await;
            if shared.handing_over.load(Ordering::SeqCst) {
                return handed_over_answer();
            }
            let old = shared.router.switch(&key, Backend::new(version, upstreams));
            let id = old.map(|g| retire(shared, &mut state, g));
            shared.persist(&state);
            Answer::ok(id)
        }
        Op::Remove { app, env, service } => {
            let key = match route_key(&app, &env, &service) {
                Ok(k) => k,
                Err(a) => return a,
            };
            let mut state = shared.state.lock().await;
            if shared.handing_over.load(Ordering::SeqCst) {
                return handed_over_answer();
            }
            let old = shared.router.remove(&key);
            let id = old.map(|g| retire(shared, &mut state, g));
            shared.persist(&state);
            Answer::ok(id)
        }
        Op::Drain {
            generation,
            timeout_ms,
        } => Answer::ok(drain(shared, generation, Duration::from_millis(timeout_ms)).await),
        Op::Generation { app, env, service } => {
            let key = match route_key(&app, &env, &service) {
                Ok(k) => k,
                Err(a) => return a,
            };
            Answer::ok(shared.router.generation(&key).map(|g| shared.info(&g)))
        }
        Op::Routes => {
            let routes: Vec<((String, String, String), GenerationInfo)> = shared
                .router
                .routes()
                .into_iter()
                .filter_map(|(k, _)| {
                    let g = shared.router.generation(&k)?;
                    Some((
                        (k.app().to_owned(), k.env().to_owned(), k.service().to_owned()),
                        shared.info(&g),
                    ))
                })
                .collect();
            Answer::ok(routes)
        }
        Op::SetGate { app, env, gate } => {
            if let Err(a) = route_key(&app, &env, "gate") {
                return a;
            }
            let state = shared.state.lock().await;
            if shared.handing_over.load(Ordering::SeqCst) {
                return handed_over_answer();
            }
            let previous = shared
                .router
                .set_gate(&app, &env, gate.as_ref().map(crate::GateRecord::gate));
            shared.persist(&state);
            Answer::ok(previous.map(|g| crate::GateRecord::new(&app, &env, &g)))
        }
        Op::Gates => Answer::ok(crate::gates::records(&shared.router)),
        Op::SetFlags { app, env, flags } => {
            if let Err(a) = route_key(&app, &env, "flags") {
                return a;
            }
            let state = shared.state.lock().await;
            if shared.handing_over.load(Ordering::SeqCst) {
                return handed_over_answer();
            }
            if let Err(e) = shared.router.set_flags(&app, &env, flags) {
                return Answer::error(ErrorKind::BadRequest, e.to_string());
            }
            shared.persist(&state);
            Answer::ok(())
        }
        Op::Flags => Answer::ok(crate::gates::flag_records(&shared.router)),
        Op::DrainEnv { app, env, timeout_ms } => Answer::ok(
            shared
                .router
                .drain_env(&app, &env, Duration::from_millis(timeout_ms))
                .await,
        ),
        Op::Shutdown | Op::HandOver => Answer::error(ErrorKind::BadRequest, "not dispatched here"),
    }
}

fn retire(shared: &Shared, state: &mut State, g: Generation) -> u64 {
    let now = Instant::now();
    state
        .retired
        .retain(|_, (_, at)| now.duration_since(*at) < RETIRED_TTL);
    let id = shared.public_id(g.id());
    state.retired.insert(id, (g, now));
    id
}

async fn drain(shared: &Shared, id: u64, timeout: Duration) -> usize {
    if (id >> 32) < u64::from(shared.epoch) {
        // A generation of the data plane this one took over from: its requests end when it
        // exits (it drains everything it still serves).
        let mut gone = shared.predecessor_gone.clone();
        return match tokio::time::timeout(timeout, async { gone.wait_for(|g| *g).await.is_ok() }).await {
            Ok(_) => 0,
            Err(_) => 1,
        };
    }
    let generation = {
        let state = shared.state.lock().await;
        state.retired.get(&id).map(|(g, _)| g.clone())
    };
    let Some(generation) = generation else {
        return 0;
    };
    let left = generation.drain(timeout).await;
    if left == 0 {
        shared.state.lock().await.retired.remove(&id);
    }
    left
}

async fn listen(shared: &Shared, kind: ListenerKind, addr: SocketAddr) -> Answer {
    let key = match fixed_key(&kind) {
        Ok(k) => k,
        Err(a) => return a,
    };
    let mut state = shared.state.lock().await;
    if shared.handing_over.load(Ordering::SeqCst) {
        return handed_over_answer();
    }
    if let Some(live) = state.listeners.get(&kind)
        && (live.addr == addr || addr.port() == 0)
    {
        return Answer::ok(live.addr);
    }
    let socket = match bind_tcp(addr) {
        Ok(s) => s,
        Err(e) => {
            return Answer::error(
                ErrorKind::Failed,
                format!("cannot listen on {addr}: {e}; is another process using the port?"),
            );
        }
    };
    let live = match start_listener(&shared.router, &kind, key, socket) {
        Ok(l) => l,
        Err(e) => return Answer::error(ErrorKind::Failed, format!("cannot serve {addr}: {e}")),
    };
    let bound = live.addr;
    if let Some(previous) = state.listeners.insert(kind.clone(), live) {
        tracing::info!(?kind, from = %previous.addr, to = %bound, "listener moved; the previous one drains");
        let task = previous.stop();
        state.draining.retain(|t| !t.is_finished());
        state.draining.push(task);
    }
    shared.persist(&state);
    Answer::ok(bound)
}
