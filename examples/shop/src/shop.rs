//! The example shop that Cutover deploys: one std-only program that plays every service of a
//! small multi-service shop, chosen by its first argument.
//!
//!   shop storefront | backoffice | api | frontend   HTTP/1.1 server on 127.0.0.1:$PORT
//!   shop migrate [--reset]                          the install hook (a file "database")
//!   shop job sync-index                             a scheduler job
//!
//! Environment: `PORT`, `CUTOVER_VERSION`, `CUTOVER_ENV_DIR`, `CUTOVER_SERVICE_URL_API` (or
//! `SHOP_API_URL`); README.md describes the contract.
//!
//! Rejected: an async runtime or an HTTP crate (the example must build offline with plain
//! rustc, see build.sh); a real database (a directory of text files replaced by atomic renames
//! shows migrations, persistence and destructive resets just as well); a JSON parser in the
//! storefront (it asks the API for the plain-text form of the catalogue instead).

use std::collections::BTreeMap;
use std::env;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long an idle keep-alive connection stays open.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connect, read and write limit of the storefront's calls to the API.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_LINE: u64 = 8 * 1024;
const MAX_HEADERS: usize = 100;
const MAX_BODY: usize = 64 * 1024;
const MAX_ANSWER: u64 = 4 << 20;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["storefront"] => serve(Role::Storefront),
        ["backoffice"] => serve(Role::Backoffice),
        ["api"] => serve(Role::Api),
        ["frontend"] => serve(Role::Frontend),
        ["migrate"] => migrate(false),
        ["migrate", "--reset"] => migrate(true),
        ["job", name] => job(name),
        _ => {
            eprintln!("usage: shop storefront|backoffice|api|frontend | migrate [--reset] | job sync-index");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("shop: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The application version this process runs: `CUTOVER_VERSION`, else "dev".
fn version() -> String {
    env::var("CUTOVER_VERSION").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| "dev".into())
}

/// The first 12 characters of a SHA; anything else is shown as it is.
fn short(v: &str) -> &str {
    v.get(..12).filter(|_| v.bytes().all(|b| b.is_ascii_hexdigit())).unwrap_or(v)
}

/// The environment's persistent directory (`CUTOVER_ENV_DIR`), else `.shop-data` in the
/// working directory, for runs by hand.
fn env_dir() -> PathBuf {
    env::var_os("CUTOVER_ENV_DIR").filter(|d| !d.is_empty()).map_or(".shop-data".into(), PathBuf::from)
}

fn db_dir() -> PathBuf {
    env_dir().join("db")
}

// ---------------------------------------------------------------------------------------------
// The file database in `$CUTOVER_ENV_DIR/db/`, one record a line:
//   products.txt  `<sku> <price_cents> <name…>` (also the line format of migrations)
//   orders.txt    `<order-id> <sku> <qty> <customer…>`
//   applied.txt   the ids of the applied migrations

struct Product {
    sku: String,
    price_cents: u64,
    name: String,
}

impl Product {
    fn parse(line: &str) -> Option<Product> {
        let mut words = line.split_whitespace();
        let (sku, price_cents) = (words.next()?, words.next()?.parse().ok()?);
        let name = words.collect::<Vec<_>>().join(" ");
        (valid_sku(sku) && !name.is_empty()).then(|| Product { sku: sku.into(), price_cents, name })
    }
    fn line(&self) -> String {
        format!("{} {} {}\n", self.sku, self.price_cents, self.name)
    }
}

/// A SKU is `[a-z0-9-]{1,40}`: safe in records, forms and HTML alike.
fn valid_sku(s: &str) -> bool {
    (1..=40).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The lines of a file that are neither blank nor `#` comments; a missing file has none.
fn read_lines(path: &Path) -> Result<Vec<String>, String> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Replaces a file atomically (a temporary file, then a rename): readers never see half of it.
fn write_atomic(path: &Path, lines: impl Iterator<Item = String>) -> Result<(), String> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    fs::write(&tmp, lines.collect::<String>())
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn append(path: &Path, line: &str) -> Result<(), String> {
    fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))
        .and_then(|()| fs::OpenOptions::new().create(true).append(true).open(path))
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(|e| format!("cannot append to {}: {e}", path.display()))
}

fn load_products(db: &Path) -> Result<BTreeMap<String, Product>, String> {
    let lines = read_lines(&db.join("products.txt"))?;
    Ok(lines.iter().filter_map(|l| Product::parse(l)).map(|p| (p.sku.clone(), p)).collect())
}

/// The install hook. Applies `migrations/NNN_*.txt` (in the release directory) in order, each
/// once. A migration lists products (`<sku> <price_cents> <name…>`), inserted or updated by
/// SKU, so re-applying one after a crash between saving and recording it does no harm.
/// `--reset` (the destructive install) first wipes the database and then loads the demo orders
/// of `demo-orders.txt`.
fn migrate(reset: bool) -> Result<(), String> {
    let db = db_dir();
    if reset && db.exists() {
        fs::remove_dir_all(&db).map_err(|e| format!("cannot wipe {}: {e}", db.display()))?;
        println!("reset: wiped {}", db.display());
    }
    fs::create_dir_all(&db).map_err(|e| format!("cannot create {}: {e}", db.display()))?;
    let entries = fs::read_dir("migrations")
        .map_err(|e| format!("cannot list migrations/ (run me in the release): {e}"))?;
    let mut files: Vec<(String, PathBuf)> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let id = e.file_name().into_string().ok()?.strip_suffix(".txt")?.to_owned();
            let b = id.as_bytes();
            let numbered = b.len() > 4 && b[..3].iter().all(u8::is_ascii_digit) && b[3] == b'_';
            numbered.then(|| (id, e.path()))
        })
        .collect();
    files.sort();
    let applied_file = db.join("applied.txt");
    let mut applied = read_lines(&applied_file)?;
    let mut products = load_products(&db)?;
    let before = applied.len();
    files.retain(|(id, _)| !applied.contains(id));
    for (id, path) in &files {
        let lines = read_lines(path)?;
        let mut changed = Vec::new();
        for line in &lines {
            changed.push(Product::parse(line).ok_or_else(|| {
                format!("{}: {line:?} is not `<sku> <price_cents> <name>`", path.display())
            })?);
        }
        // Nothing of a migration is saved unless all of it is valid.
        for p in changed {
            products.insert(p.sku.clone(), p);
        }
        write_atomic(&db.join("products.txt"), products.values().map(Product::line))?;
        applied.push(id.clone());
        write_atomic(&applied_file, applied.iter().map(|a| format!("{a}\n")))?;
        println!("applied migration {id} ({} product(s))", lines.len());
    }
    if reset {
        let orders = read_lines(Path::new("demo-orders.txt"))?;
        write_atomic(&db.join("orders.txt"), orders.iter().map(|o| format!("{o}\n")))?;
        println!("reset: loaded {} demo order(s)", orders.len());
    }
    println!(
        "database {} is up to date: {} migration(s) applied now, {} in all; {} product(s)",
        db.display(),
        applied.len() - before,
        applied.len(),
        products.len()
    );
    Ok(())
}

/// Scheduler jobs. `sync-index` "re-indexes the catalogue": it appends one line to
/// `$CUTOVER_ENV_DIR/jobs.log`, so each run and the version that ran it are visible.
fn job(name: &str) -> Result<(), String> {
    if name != "sync-index" {
        return Err(format!("unknown job {name:?}; the jobs are: sync-index"));
    }
    let products = load_products(&db_dir())?.len();
    let line = format!("{} sync-index version={} products={products}\n", utc_now(), version());
    append(&env_dir().join("jobs.log"), &line)?;
    print!("{line}");
    Ok(())
}

/// The current time as `YYYY-MM-DDThh:mm:ssZ`, without a date crate.
fn utc_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's `civil_from_days`).
    let z = days + 719_468;
    let (era, doe) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

// ---------------------------------------------------------------------------------------------
// The HTTP server

#[derive(Clone, Copy, PartialEq)]
enum Role {
    Storefront,
    Backoffice,
    Api,
    Frontend,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Storefront => "storefront",
            Role::Backoffice => "backoffice",
            Role::Api => "api",
            Role::Frontend => "frontend",
        }
    }
}

struct Request {
    method: String,
    target: String,
    path: String,
    /// The client asked for `text/plain` (the storefront does, for the catalogue).
    wants_text: bool,
    body: Vec<u8>,
    /// Close the connection after answering (HTTP/1.0 or `Connection: close`).
    close: bool,
}

struct Response {
    status: u16,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Response {
    fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response { status, content_type, headers: Vec::new(), body: body.into() }
    }
    fn text(status: u16, body: &str) -> Response {
        Response::new(status, "text/plain; charset=utf-8", format!("{body}\n"))
    }
    fn html(title: &str, body: &str) -> Response {
        let page = format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{}</title><style>\
             body{{font-family:sans-serif;margin:2em}} .versions{{font-family:monospace}} \
             .warn{{color:#a40}} td,th{{padding:.2em 1em;text-align:left}}</style></head>\n\
             <body>\n{body}</body></html>\n",
            html(title)
        );
        Response::new(200, "text/html; charset=utf-8", page)
    }
    fn json(fields: &[(&str, Option<&str>)]) -> Response {
        let fields: Vec<String> =
            fields.iter().map(|(k, v)| format!("\"{k}\":{}", v.map_or("null".into(), json_str))).collect();
        Response::new(200, "application/json", format!("{{{}}}\n", fields.join(",")))
    }
}

fn serve(role: Role) -> Result<(), String> {
    let port: u16 = env::var("PORT").ok().and_then(|p| p.parse().ok()).ok_or("PORT must be set to a port")?;
    let listener = TcpListener::bind(("127.0.0.1", port))
        .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e}"))?;
    println!(
        "{} {} listening on http://127.0.0.1:{port} (pid {})",
        role.name(),
        version(),
        std::process::id()
    );
    for conn in listener.incoming() {
        match conn {
            // A failed spawn (thread limit) drops this connection, not the server.
            Ok(stream) => {
                let _ = thread::Builder::new().spawn(move || handle_connection(role, stream));
            }
            Err(e) => {
                eprintln!("accept failed: {e}");
                thread::sleep(Duration::from_millis(50)); // e.g. out of file descriptors
            }
        }
    }
    Ok(())
}

/// Serves requests on one connection until the client closes it, asks to, or idles out.
fn handle_connection(role: Role, stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IDLE_TIMEOUT));
    let Ok(mut out) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    loop {
        let started = Instant::now();
        let (req, resp) = match read_request(&mut reader) {
            Ok(req) => {
                let resp = respond(role, &req);
                (req, resp)
            }
            Err(None) => return, // closed, timed out or broken: nobody to answer
            Err(Some(status)) => {
                let (method, target, path) = ("-".into(), "-".into(), String::new());
                let req = Request { method, target, path, wants_text: false, body: Vec::new(), close: true };
                (req, Response::text(status, reason(status)))
            }
        };
        let ms = started.elapsed().as_millis();
        println!("{} {} {} {} {ms}ms", role.name(), req.method, req.target, resp.status);
        if write_response(&mut out, &req, &resp).is_err() || req.close {
            return;
        }
    }
}

/// One line without its line end; `Ok(None)` at the end of the stream. `Err(Some(431))`: too
/// long; `Err(None)`: an I/O error or a line cut short.
fn read_line(r: &mut impl BufRead) -> Result<Option<String>, Option<u16>> {
    let mut buf = Vec::new();
    match (&mut *r).take(MAX_LINE).read_until(b'\n', &mut buf) {
        Ok(0) => Ok(None),
        Ok(n) if !buf.ends_with(b"\n") => Err((n as u64 >= MAX_LINE).then_some(431)),
        Ok(_) => Ok(Some(String::from_utf8_lossy(&buf).trim_end_matches(['\r', '\n']).to_owned())),
        Err(_) => Err(None),
    }
}

/// Reads one request. `Err(None)`: the connection is gone; `Err(Some(status))`: answer with
/// that status and close.
fn read_request(r: &mut impl BufRead) -> Result<Request, Option<u16>> {
    let mut line = String::new();
    while line.is_empty() {
        line = read_line(r)?.ok_or(None)?; // blank lines before a request are allowed
    }
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, target, http] = parts.as_slice() else { return Err(Some(400)) };
    if !http.starts_with("HTTP/1.") {
        return Err(Some(400));
    }
    let (mut close, mut wants_text, mut length) = (*http == "HTTP/1.0", false, 0);
    for count in 0.. {
        let header = read_line(r)?.ok_or(None)?;
        if header.is_empty() {
            break;
        } else if count == MAX_HEADERS {
            return Err(Some(431));
        }
        let (name, value) = header.split_once(':').ok_or(Some(400))?;
        let value = value.trim().to_ascii_lowercase();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().map_err(|_| Some(400))?,
            "transfer-encoding" => return Err(Some(501)), // no chunked request bodies here
            "connection" => close = value.contains("close") || (close && !value.contains("keep-alive")),
            "accept" => wants_text = value.starts_with("text/plain"),
            _ => {}
        }
    }
    if length > MAX_BODY {
        return Err(Some(413));
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).map_err(|_| None)?;
    let path = target.split(['?', '#']).next().unwrap_or_default().to_owned();
    Ok(Request { method: method.to_string(), target: target.to_string(), path, wants_text, body, close })
}

fn write_response(out: &mut impl Write, req: &Request, resp: &Response) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nX-App-Version: {}\r\n\
         Cache-Control: no-store\r\nConnection: {}\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len(),
        version(),
        if req.close { "close" } else { "keep-alive" },
    );
    for (name, value) in &resp.headers {
        head += &format!("{name}: {value}\r\n");
    }
    head += "\r\n";
    let mut bytes = head.into_bytes();
    if req.method != "HEAD" {
        bytes.extend_from_slice(&resp.body);
    }
    out.write_all(&bytes)?;
    out.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        303 => "See Other",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        _ => "Internal Server Error",
    }
}

/// Routes a request to the role's pages. Every role answers `/health` and `/version.json`.
fn respond(role: Role, req: &Request) -> Response {
    let v = version();
    let post_order = role == Role::Storefront && req.method == "POST" && req.path == "/order";
    if !matches!(req.method.as_str(), "GET" | "HEAD") && !post_order {
        let mut resp = Response::text(405, "method not allowed");
        resp.headers.push(("Allow", "GET, HEAD".into()));
        return resp;
    }
    let result = match (role, req.path.as_str()) {
        (_, "/health") => Ok(Response::text(200, "ok")),
        (Role::Storefront, "/") => Ok(storefront_page(&v)),
        (Role::Storefront, "/order") if post_order => place_order(&v, &req.body),
        (Role::Storefront, "/version.json") => {
            let api = fetch_catalogue();
            let (api_version, api_error) = (api.as_ref().ok().map(|a| a.0.as_str()), api.as_ref().err());
            Ok(Response::json(&[
                ("service", Some("storefront")),
                ("version", Some(v.as_str())),
                ("api_version", api_version),
                ("api_error", api_error.map(String::as_str)),
            ]))
        }
        (_, "/version.json") => {
            Ok(Response::json(&[("service", Some(role.name())), ("version", Some(v.as_str()))]))
        }
        (Role::Api, "/api/products") => api_products(&v, req.wants_text),
        (Role::Backoffice, "/") => backoffice_page(&v),
        (Role::Frontend, path) => Ok(static_file(path)),
        _ => Ok(Response::text(404, "not found")),
    };
    result.unwrap_or_else(|e| {
        eprintln!("{} {}: {e}", role.name(), req.path);
        Response::text(500, &format!("internal error: {e}"))
    })
}

// ---------------------------------------------------------------------------------------------
// The roles' pages

/// The catalogue as JSON, or with `Accept: text/plain` as product lines (the storefront's form).
fn api_products(v: &str, wants_text: bool) -> Result<Response, String> {
    let products = load_products(&db_dir())?;
    if wants_text {
        let lines: String = products.values().map(Product::line).collect();
        return Ok(Response::new(200, "text/plain; charset=utf-8", lines));
    }
    let items: Vec<String> = products
        .values()
        .map(|p| {
            let (sku, name) = (json_str(&p.sku), json_str(&p.name));
            format!("{{\"sku\":{sku},\"name\":{name},\"price_cents\":{}}}", p.price_cents)
        })
        .collect();
    let body =
        format!("{{\"service\":\"api\",\"version\":{},\"products\":[{}]}}\n", json_str(v), items.join(","));
    Ok(Response::new(200, "application/json", body))
}

fn storefront_page(v: &str) -> Response {
    let mut body = format!("<h1>Shop storefront — version {}</h1>\n", html(short(v)));
    match fetch_catalogue() {
        Ok((api, products)) => {
            body += &format!(
                "<p class=\"versions\">storefront {} · api {}</p>\n",
                html(short(v)),
                html(short(&api))
            );
            if api != v {
                body += "<p class=\"warn\">The storefront and the API run different versions.</p>\n";
            }
            body += "<table><tr><th>Product</th><th>Price</th><th></th></tr>\n";
            for p in &products {
                let (cents, sku) = (p.price_cents, html(&p.sku));
                body += &format!(
                    "<tr><td>{}</td><td>{}.{:02} €</td><td><form method=\"post\" action=\"/order\">\
                     <button name=\"sku\" value=\"{sku}\">Buy</button></form></td></tr>\n",
                    html(&p.name),
                    cents / 100,
                    cents % 100,
                );
            }
            body += "</table>\n";
        }
        Err(e) => {
            body += &format!("<p class=\"versions\">storefront {} · api unavailable</p>\n", html(short(v)));
            body += &format!("<p class=\"warn\">The catalogue is unavailable: {}</p>\n", html(&e));
        }
    }
    Response::html("Shop", &body)
}

/// `POST /order` with the form field `sku`: records one order for the back office.
fn place_order(v: &str, body: &[u8]) -> Result<Response, String> {
    let form = String::from_utf8_lossy(body);
    let sku = form.split('&').find_map(|kv| kv.strip_prefix("sku=")).unwrap_or_default();
    if !valid_sku(sku) {
        return Ok(Response::text(400, "expected the form field sku=<sku>"));
    }
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    append(&db_dir().join("orders.txt"), &format!("web-{millis} {sku} 1 guest (storefront {})\n", short(v)))?;
    let mut resp = Response::text(303, "ordered");
    resp.headers.push(("Location", "/".into()));
    Ok(resp)
}

fn backoffice_page(v: &str) -> Result<Response, String> {
    let db = db_dir();
    let (products, orders) = (load_products(&db)?, read_lines(&db.join("orders.txt"))?);
    let applied = read_lines(&db.join("applied.txt"))?.join(", ");
    let mut body = format!("<h1>Back office</h1>\n<p class=\"versions\">backoffice {}</p>\n", html(short(v)));
    body += &format!("<p>{} product(s); migrations applied: {}</p>\n", products.len(), html(&applied));
    body += &format!("<h2>Orders ({})</h2>\n<table><tr>", orders.len());
    body += "<th>Order</th><th>Product</th><th>Qty</th><th>Customer</th></tr>\n";
    for order in &orders {
        let mut cells: Vec<&str> = order.splitn(4, ' ').collect();
        if let Some(p) = cells.get(1).and_then(|sku| products.get(*sku)) {
            cells[1] = &p.name;
        }
        let cells: String = cells.iter().map(|c| format!("<td>{}</td>", html(c))).collect();
        body += &format!("<tr>{cells}</tr>\n");
    }
    body += "</table>\n";
    if orders.is_empty() {
        body += "<p>No orders yet: buy something in the storefront, or run the destructive pipeline \
                 to load the demo orders.</p>\n";
    }
    Ok(Response::html("Back office", &body))
}

/// Serves `public/<file>` of the working directory (the release directory). Only plain file
/// names are served, so no request can reach outside `public/`.
fn static_file(path: &str) -> Response {
    let name = if path == "/" { "index.html" } else { path.strip_prefix('/').unwrap_or(".") };
    let safe =
        !name.starts_with('.') && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    let content_type = match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    };
    match fs::read(Path::new("public").join(name)) {
        Ok(bytes) if safe => Response::new(200, content_type, bytes),
        _ => Response::text(404, "not found"),
    }
}

fn html(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' => out.extend(['\\', c]),
            c if (c as u32) < 0x20 => out += &format!("\\u{:04x}", c as u32),
            c => out.push(c),
        }
    }
    out + "\""
}

// ---------------------------------------------------------------------------------------------
// The storefront's client for the API

/// The API's version (its `X-App-Version` header) and catalogue.
fn fetch_catalogue() -> Result<(String, Vec<Product>), String> {
    let base = env::var("SHOP_API_URL")
        .or_else(|_| env::var("CUTOVER_SERVICE_URL_API"))
        .map_err(|_| "neither SHOP_API_URL nor CUTOVER_SERVICE_URL_API is set".to_owned())?;
    let (api_version, body) = http_get(&base, "/api/products")?;
    let api_version = api_version.ok_or("the API's answer has no X-App-Version header")?;
    Ok((api_version, body.lines().filter_map(Product::parse).collect()))
}

/// `GET <base><path>` asking for `text/plain`; the `X-App-Version` header and the body of a 200
/// answer.
///
/// Names under `localhost` (such as the router's `api.staging.shop.localhost`) are not resolved
/// by the system resolver the way browsers resolve them, so they are connected to on 127.0.0.1
/// (RFC 6761); the `Host` header still carries the name, which the router routes by. The
/// request is HTTP/1.0 with `Connection: close`, so the answer is never chunked.
fn http_get(base: &str, path: &str) -> Result<(Option<String>, String), String> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let fail = |e: &dyn std::fmt::Display| format!("GET {url}: {e}");
    let rest = url.strip_prefix("http://").ok_or_else(|| fail(&"only http:// URLs are supported"))?;
    let (authority, target) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, p.parse::<u16>().map_err(|_| fail(&"bad port"))?),
        _ => (authority, 80), // no port, or a bare [IPv6] address
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let lower = host.to_ascii_lowercase();
    let addrs: Vec<SocketAddr> = if lower == "localhost" || lower.ends_with(".localhost") {
        vec![SocketAddr::from(([127, 0, 0, 1], port))]
    } else {
        (host, port).to_socket_addrs().map_err(|e| fail(&e))?.collect()
    };
    let mut connected = Err(io::Error::other("the name has no address"));
    for addr in &addrs {
        connected = TcpStream::connect_timeout(addr, UPSTREAM_TIMEOUT);
        if connected.is_ok() {
            break;
        }
    }
    let mut stream = connected.map_err(|e| fail(&e))?;
    stream.set_read_timeout(Some(UPSTREAM_TIMEOUT)).map_err(|e| fail(&e))?;
    stream.set_write_timeout(Some(UPSTREAM_TIMEOUT)).map_err(|e| fail(&e))?;
    let target = if target.is_empty() { "/" } else { target };
    let request = format!(
        "GET {target} HTTP/1.0\r\nHost: {authority}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(|e| fail(&e))?;

    let mut r = BufReader::new(stream);
    let cut = |_| fail(&"the answer was cut short or too large");
    let status_line = read_line(&mut r).map_err(cut)?.unwrap_or_default();
    let (mut length, mut app_version) = (None, None);
    while let Some(header) = read_line(&mut r).map_err(cut)?.filter(|h| !h.is_empty()) {
        let (name, value) = header.split_once(':').unwrap_or((&header, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse::<u64>().ok(),
            "x-app-version" => app_version = Some(value.trim().to_owned()),
            _ => {}
        }
    }
    let mut body = String::new();
    r.take(length.unwrap_or(MAX_ANSWER).min(MAX_ANSWER)).read_to_string(&mut body).map_err(|e| fail(&e))?;
    match status_line.split(' ').nth(1) {
        Some("200") if length.is_none_or(|n| n == body.len() as u64) => Ok((app_version, body)),
        Some("200") => Err(fail(&"the answer was cut short")),
        status => Err(fail(&format!("answered {}", status.unwrap_or("nothing")))),
    }
}
