//! Routing classification: whether a replica may run a client's SQL text, and by which rule
//! it may not. One pass of the lexer over the text, no parser and no allocation: this runs
//! for every transaction a session without a server starts, and for every Parse (the caller
//! caches the answer per prepared statement).
//!
//! A text may go to a replica only if every rule allows it; otherwise it goes to the primary,
//! and [`Classification::rule`] names the rule that decided (`Rule::as_str` is the stable id
//! logs and metrics use). Everything the lexer cannot read, or a first word it does not know,
//! is `unrecognised` and goes to the primary. Every statement of a multi-statement text is
//! classified and [`Classification::merge`] folds them: one write makes the whole text a
//! write; the same function folds the statements of one pipelined batch (Parse/Bind/Execute
//! up to Sync).
//!
//! What the rules read, in the order a statement is read:
//! - the first word: writes (`INSERT`, `UPDATE`, `DELETE`, `MERGE`, `TRUNCATE`, `COPY ...
//!   FROM`, `CALL`, `DO`, `VACUUM`, `ANALYZE`, `CLUSTER`, `REINDEX`, `REFRESH`, `LOCK`,
//!   `CHECKPOINT`, `NOTIFY`, `LISTEN`, `UNLISTEN`, two-phase commands) are
//!   `write-statement`; DDL (`CREATE`, `ALTER`, `DROP`, `COMMENT`, `GRANT`, `REVOKE`,
//!   `SECURITY LABEL`, `REASSIGN`, `IMPORT`; `CREATE TABLE AS` too) is `ddl`;
//! - in queries (`SELECT`, `WITH`, `VALUES`, `TABLE`, `COPY (query) TO`, a cursor's or a
//!   PREPARE's query, an `EXPLAIN ANALYZE`'s statement) at any depth: `FOR UPDATE`/`FOR NO
//!   KEY UPDATE`/`FOR SHARE`/`FOR KEY SHARE` (`locking-clause`), `(INSERT|UPDATE|DELETE|MERGE`
//!   (`writing-cte`; at the top of a `WITH`, `write-statement`), `INTO` (`select-into`);
//! - function calls, in every statement: a word (or quoted identifier) followed by `(` that
//!   is not SQL syntax (`IN (`, `COALESCE(`, `varchar(10)`, a CTE's or an alias's column
//!   list...) is a call, looked up by its unqualified name: `nextval`, `setval`, `currval`,
//!   `lastval` (`sequence-function`), `pg_advisory*lock*`/`pg_try_advisory*lock*`
//!   (`advisory-lock`), `set_config` (`set-config`), large-object writes
//!   (`large-object-write`), then [`Functions`]: volatile is `volatile-function`, a name it
//!   does not know `unknown-function`;
//! - what pins the session to its node (temporary tables, `DECLARE ... WITH HOLD`, SQL
//!   `PREPARE`, session advisory locks, `currval`/`lastval`, `LISTEN`, `set_config(...,
//!   false)`) sends the text to the primary (`pins-session`) when no other rule did: the
//!   primary is the one node that can run whatever the pinned session sends next;
//! - transactions: a `BEGIN`/`START TRANSACTION` not declared `READ ONLY` is
//!   `read-write-transaction` (unless the session's default is read-only, see
//!   [`Classification::rule_under`]), `SERIALIZABLE` (declared, or the session's default)
//!   is `serializable` (a hot standby refuses it); `READ ONLY` is `read-only-transaction`;
//! - a hint in a comment before the first token, `/* switchyard: primary */` or
//!   `/* switchyard: replica */` (any case and spacing): `primary` sends a text that every
//!   rule allows to the primary (`hint-primary`); `replica` changes no rule, it is reported
//!   in [`Classification::hint`] for the caller to weigh against the session's and the
//!   database's routing settings. A hint never sends to a replica what a rule sends to the
//!   primary.
//!
//! Plain `EXPLAIN` (without `ANALYZE`) of anything is a read: it runs nothing. What happens
//! inside a function body cannot be seen: a function declared stable or immutable that
//! writes is misclassified, and the caller's safety net (a replica's `25006`) catches it.
//! An alias column list written without `AS` after a table name (`FROM t x(a)`) is taken for
//! a call and, unknown, sends the text to the primary: safe, only less routed.
//!
//! Operators cannot be seen either: a user-defined operator backed by a volatile function
//! counts as a read.
//!
//! Cost: a plain read (no parenthesis, quote or comment; `SELECT` without the words the
//! query rules read, as pgbench `-S`'s statement) is decided in one look at each byte
//! (`plain_read`): about 690 instructions (50-70 ns in a release build) for pgbench `-S`'s
//! statement. Other texts are lexed token by token: about 55 instructions per byte in a
//! release build (a 150-byte query with three function calls: about 8,000). Measured with
//! `cost_of_pgbench_select` (`--ignored`) and callgrind; the caller caches per prepared
//! statement.

use std::collections::HashMap;
use std::hash::BuildHasher;

use super::lex::{leading_comments, plain_words, unqualified, Lexer, Token, TokenKind};
use super::session::server_state;

/// A function's volatility, as `pg_proc.provolatile` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Volatility {
    Immutable,
    Stable,
    Volatile,
}

/// The functions the classification knows, by unqualified name (unquoted names lower-cased,
/// quoted ones verbatim). The caller builds it from `pg_proc.provolatile` and the
/// configuration's `read_only_functions` and `write_functions` (the second wins).
pub trait Functions {
    /// `None` for a function it does not know: the text goes to the primary.
    fn volatility(&self, name: &str) -> Option<Volatility>;
}

impl<S: BuildHasher> Functions for HashMap<String, Volatility, S> {
    fn volatility(&self, name: &str) -> Option<Volatility> {
        self.get(name).copied()
    }
}

/// The WIT `query-kind` of a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Read,
    Write,
    Ddl,
    TransactionControl,
    SessionControl,
    Unknown,
}

impl Kind {
    /// The WIT enum case's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Read => "read",
            Kind::Write => "write",
            Kind::Ddl => "ddl",
            Kind::TransactionControl => "transaction-control",
            Kind::SessionControl => "session-control",
            Kind::Unknown => "unknown",
        }
    }

    /// Which kind a text of several statements has: the one of its statements that weighs
    /// most (`BEGIN; SELECT 1` is a read, `SELECT 1; INSERT ...` a write).
    fn weight(self) -> u8 {
        match self {
            Kind::TransactionControl => 0,
            Kind::SessionControl => 1,
            Kind::Read => 2,
            Kind::Unknown => 3,
            Kind::Write => 4,
            Kind::Ddl => 5,
        }
    }
}

/// The rule that decided where a text goes. Only `Read` and `ReadOnlyTransaction` allow a
/// replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Every rule allows a replica.
    Read,
    /// A transaction declared `READ ONLY` (or begun under a read-only session default).
    ReadOnlyTransaction,
    WriteStatement,
    Ddl,
    LockingClause,
    WritingCte,
    SelectInto,
    VolatileFunction,
    UnknownFunction,
    SequenceFunction,
    AdvisoryLock,
    SetConfig,
    LargeObjectWrite,
    PinsSession,
    Serializable,
    ReadWriteTransaction,
    HintPrimary,
    Unrecognised,
}

impl Rule {
    /// Every rule, for metrics that list each label.
    pub const ALL: [Rule; 18] = [
        Rule::Read,
        Rule::ReadOnlyTransaction,
        Rule::WriteStatement,
        Rule::Ddl,
        Rule::LockingClause,
        Rule::WritingCte,
        Rule::SelectInto,
        Rule::VolatileFunction,
        Rule::UnknownFunction,
        Rule::SequenceFunction,
        Rule::AdvisoryLock,
        Rule::SetConfig,
        Rule::LargeObjectWrite,
        Rule::PinsSession,
        Rule::Serializable,
        Rule::ReadWriteTransaction,
        Rule::HintPrimary,
        Rule::Unrecognised,
    ];

    /// The stable id (kebab case) logs and metrics label the decision with.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Read => "read",
            Rule::ReadOnlyTransaction => "read-only-transaction",
            Rule::WriteStatement => "write-statement",
            Rule::Ddl => "ddl",
            Rule::LockingClause => "locking-clause",
            Rule::WritingCte => "writing-cte",
            Rule::SelectInto => "select-into",
            Rule::VolatileFunction => "volatile-function",
            Rule::UnknownFunction => "unknown-function",
            Rule::SequenceFunction => "sequence-function",
            Rule::AdvisoryLock => "advisory-lock",
            Rule::SetConfig => "set-config",
            Rule::LargeObjectWrite => "large-object-write",
            Rule::PinsSession => "pins-session",
            Rule::Serializable => "serializable",
            Rule::ReadWriteTransaction => "read-write-transaction",
            Rule::HintPrimary => "hint-primary",
            Rule::Unrecognised => "unrecognised",
        }
    }

    /// Whether a replica may run a text this rule decided.
    pub fn allows_replica(self) -> bool {
        matches!(self, Rule::Read | Rule::ReadOnlyTransaction)
    }
}

/// A routing hint from a comment before the first token of the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    Primary,
    Replica,
}

/// Transaction modes a statement declares; `None` where it says nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Modes {
    /// `READ ONLY` (true) or `READ WRITE` (false).
    pub read_only: Option<bool>,
    /// `ISOLATION LEVEL SERIALIZABLE` (true) or another level (false).
    pub serializable: Option<bool>,
}

/// What a text does to the session's transaction: the first such statement of the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transaction {
    None,
    /// `BEGIN` / `START TRANSACTION` with its modes.
    Begin(Modes),
    /// `SET TRANSACTION ...`, `SET transaction_read_only`/`transaction_isolation`: the
    /// current transaction's modes.
    SetTransaction(Modes),
    /// `SET SESSION CHARACTERISTICS AS TRANSACTION ...`, `SET default_transaction_read_only`
    /// / `default_transaction_isolation`: the modes of the session's later transactions.
    SetDefaults(Modes),
    /// `COMMIT` / `END`; `chain` for `AND CHAIN` (a new transaction with the same modes).
    Commit {
        chain: bool,
    },
    /// `ROLLBACK` / `ABORT`.
    Rollback {
        chain: bool,
    },
    /// `PREPARE TRANSACTION`: the block ends, the prepared transaction stays on its node.
    PrepareTransaction,
    /// `SAVEPOINT`, `RELEASE`, `ROLLBACK TO`.
    Savepoint,
}

/// The session's transaction defaults, as the session tracks them
/// (`default_transaction_read_only`, `default_transaction_isolation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionDefaults {
    pub read_only: bool,
    pub serializable: bool,
}

/// What the host knows of a text's effect and where it may run. Small and `Copy`: the
/// caller caches it per prepared statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classification {
    /// The WIT `query-kind`.
    pub kind: Kind,
    /// Why the text pins the session to the node that runs it, if it does.
    pub pin: Option<&'static str>,
    /// The hint of a leading comment.
    pub hint: Option<Hint>,
    /// The first statement's effect on the session's transaction.
    pub transaction: Transaction,
    /// The first rule a statement broke, whatever the session's transaction modes.
    forced: Option<Rule>,
    /// The text begins a transaction block.
    begins: bool,
    /// The modes of the transaction the text leaves open (or runs in), folded in order.
    modes: Modes,
    /// The text changes the session's transaction defaults.
    changes_defaults: bool,
    /// The text has words that may create server-side state (`CREATE`, `LISTEN`, `DECLARE`,
    /// `INTO TEMP`, a `pg_temp.` name, an advisory lock or `set_config` call):
    /// `server_state` must read it.
    state_words: bool,
    /// Read by the fast path ([`Classification::plain_read`]).
    plain: bool,
}

impl Classification {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            pin: None,
            hint: None,
            transaction: Transaction::None,
            forced: None,
            begins: false,
            modes: Modes::default(),
            changes_defaults: false,
            state_words: false,
            plain: false,
        }
    }

    /// The rule that decides where the text goes for a session with the server's default
    /// transaction modes (read-write, not serializable).
    pub fn rule(&self) -> Rule {
        self.rule_under(SessionDefaults::default())
    }

    /// Whether the text was read by the fast path for plain reads: one `SELECT`, `TABLE` or
    /// `SHOW` of words, numbers, parameters and operators only (no call, quote, comment or
    /// `INTO`), which cannot create state that lives on its server, so the session's own
    /// pass over the text for that ([`super::server_state`]) is not needed.
    pub fn plain_read(&self) -> bool {
        self.plain
    }

    /// Whether a replica may run the text for a session with the default transaction modes.
    pub fn replica_allowed(&self) -> bool {
        self.rule().allows_replica()
    }

    /// The rule that decides where the text goes for a session whose transaction defaults
    /// are `defaults`: a `BEGIN` that declares no access mode is read-only under a read-only
    /// default (unless the text itself changes the defaults), and any text that does not
    /// declare its isolation runs serializable under a serializable default.
    pub fn rule_under(&self, defaults: SessionDefaults) -> Rule {
        if let Some(rule) = self.forced {
            return rule;
        }
        if self.pin.is_some() {
            return Rule::PinsSession;
        }
        if self.modes.serializable.unwrap_or(defaults.serializable) {
            return Rule::Serializable;
        }
        let read_only = match self.modes.read_only {
            None if self.begins => Some(defaults.read_only && !self.changes_defaults),
            declared => declared,
        };
        let rule = match read_only {
            Some(true) => Rule::ReadOnlyTransaction,
            Some(false) => Rule::ReadWriteTransaction,
            None => Rule::Read,
        };
        if rule.allows_replica() && self.hint == Some(Hint::Primary) {
            Rule::HintPrimary
        } else {
            rule
        }
    }

    /// The classification of `self` followed by `later` (the next statement of a text, or
    /// the next text of a pipelined batch): the first rule broken decides, the kind that
    /// weighs most, the first pin, the first transaction effect; a `primary` hint in either
    /// wins; the transaction's modes are folded in order (a later `BEGIN` starts afresh, a
    /// `SERIALIZABLE` anywhere stays).
    pub fn merge(self, later: Classification) -> Classification {
        let hint = match (self.hint, later.hint) {
            (Some(Hint::Primary), _) | (_, Some(Hint::Primary)) => Some(Hint::Primary),
            (first, second) => first.or(second),
        };
        Classification {
            kind: if later.kind.weight() > self.kind.weight() {
                later.kind
            } else {
                self.kind
            },
            pin: self.pin.or(later.pin),
            hint,
            transaction: match self.transaction {
                Transaction::None => later.transaction,
                first => first,
            },
            forced: self.forced.or(later.forced),
            begins: self.begins || later.begins,
            modes: Modes {
                read_only: if later.begins {
                    later.modes.read_only
                } else {
                    later.modes.read_only.or(self.modes.read_only)
                },
                serializable: match self.modes.serializable {
                    Some(true) => Some(true),
                    earlier => later.modes.serializable.or(earlier),
                },
            },
            changes_defaults: self.changes_defaults || later.changes_defaults,
            state_words: self.state_words || later.state_words,
            plain: self.plain && later.plain,
        }
    }

    /// Records `rule` unless an earlier one decided.
    fn force(&mut self, rule: Rule) {
        self.forced = self.forced.or(Some(rule));
    }

    fn pin(&mut self, why: &'static str) {
        self.pin = self.pin.or(Some(why));
    }
}

/// Classifies the text of one simple Query message (one or more statements) or one Parse's
/// statement.
pub fn classify(sql: &[u8], functions: &impl Functions) -> Classification {
    if plain_read(sql) {
        return Classification {
            plain: true,
            ..Classification::new(Kind::Read)
        };
    }
    classify_lexed(sql, functions)
}

/// The common read, decided in one look at each byte: a plain text (see
/// [`plain_words`]: no parenthesis, so no function call or CTE; no comment, so no hint)
/// that begins with `SELECT`, `TABLE` or `SHOW` and has none of the words a rule reads in a
/// query (`FOR`, `INTO`, `INSERT`, `UPDATE`, `DELETE`, `MERGE`, a `pg_temp.` name).
fn plain_read(sql: &[u8]) -> bool {
    let mut first = true;
    let plain = plain_words(sql, |word| {
        let is = |w: &[u8]| word.eq_ignore_ascii_case(w);
        if std::mem::take(&mut first) {
            return is(b"select") || is(b"table") || is(b"show");
        }
        if !matches!(word[0] | 0x20, b'f' | b'i' | b'm' | b'u' | b'd' | b'p') {
            return true;
        }
        match word.len() {
            3 => !is(b"for"),
            4 => !is(b"into"),
            5 => !is(b"merge"),
            6 => !(is(b"insert") || is(b"update") || is(b"delete")),
            9.. => !word[..8].eq_ignore_ascii_case(b"pg_temp."),
            _ => true,
        }
    });
    plain && !first
}

/// Every other text, token by token.
fn classify_lexed(sql: &[u8], functions: &impl Functions) -> Classification {
    let mut lexer = Lexer::new(sql);
    let mut out: Option<Classification> = None;
    loop {
        let mut peek = lexer.clone();
        match peek.next() {
            None => {
                // Keeps what the lexer saw of a comment left open at the end.
                lexer = peek;
                break;
            }
            Some(tok) if tok.is_punct(b';') => lexer = peek,
            Some(_) => {
                let one = statement(&mut lexer, functions);
                out = Some(out.map_or(one, |earlier| earlier.merge(one)));
            }
        }
    }
    // No statement at all: the server answers EmptyQueryResponse, on any node.
    let mut out = out.unwrap_or(Classification::new(Kind::Read));
    if lexer.unterminated() {
        out.forced = Some(Rule::Unrecognised);
        out.kind = Kind::Unknown;
    }
    // Only texts with the words that begin server-side state pay for `server_state`'s pass.
    if out.pin.is_none() && out.state_words {
        out.pin = server_state(sql);
    }
    out.hint = hint(sql);
    out
}

/// Whether `sql` is one plain `BEGIN [WORK | TRANSACTION]` or `START TRANSACTION`, with no
/// transaction mode and no hint, and nothing after it but a `;`: a block whose access mode
/// the client may still declare with a `SET TRANSACTION` as its first statement. Returns the
/// command tag Postgres answers it with.
pub fn lone_begin(sql: &[u8]) -> Option<&'static str> {
    let mut lexer = Lexer::new(sql);
    let first = lexer.next()?;
    let tag = if first.is("begin") {
        let mut peek = lexer.clone();
        if peek.next().is_some_and(|t| t.is("work") || t.is("transaction")) {
            lexer = peek;
        }
        "BEGIN"
    } else if first.is("start") && lexer.next()?.is("transaction") {
        "START TRANSACTION"
    } else {
        return None;
    };
    let rest_is_empty = match lexer.next() {
        None => true,
        Some(semicolon) if semicolon.is_punct(b';') => lexer.next().is_none(),
        Some(_) => false,
    };
    (rest_is_empty && !lexer.unterminated() && hint(sql).is_none()).then_some(tag)
}

/// The hint of the first leading comment that is one.
fn hint(sql: &[u8]) -> Option<Hint> {
    leading_comments(sql).find_map(|body| {
        let rest = strip_word(body.trim_ascii(), "switchyard")?.trim_ascii_start();
        let rest = rest.strip_prefix(b":")?.trim_ascii();
        if rest.eq_ignore_ascii_case(b"primary") {
            Some(Hint::Primary)
        } else if rest.eq_ignore_ascii_case(b"replica") {
            Some(Hint::Replica)
        } else {
            None
        }
    })
}

fn strip_word<'a>(text: &'a [u8], word: &str) -> Option<&'a [u8]> {
    let head = text.get(..word.len())?;
    head.eq_ignore_ascii_case(word.as_bytes())
        .then(|| &text[word.len()..])
}

/// One statement, read from `lexer` up to (not including) its `;`, the end of the text, or
/// a `)` that closes a parenthesis opened before it (the statement of `COPY (...) TO`).
fn statement(lexer: &mut Lexer, functions: &impl Functions) -> Classification {
    let c = first_word(lexer, functions);
    skip_rest(lexer);
    c
}

/// The statement as its first word says; the lexer is left anywhere in the statement.
fn first_word(lexer: &mut Lexer, functions: &impl Functions) -> Classification {
    let start = lexer.clone();
    let Some(first) = next_in(lexer) else {
        return unrecognised();
    };
    if first.is_punct(b'(') {
        *lexer = start;
        return query(lexer, functions);
    }
    let mut buf = [0u8; 16];
    let Some(word) = folded(first, &mut buf).filter(|_| first.kind == TokenKind::Word) else {
        return unrecognised();
    };
    let (kind, rule) = match word {
        "select" | "with" | "values" | "table" => {
            *lexer = start;
            return query(lexer, functions);
        }
        "show" | "fetch" | "move" | "close" => (Kind::Read, None),
        "explain" => return explain(lexer, functions),
        "declare" => return declare(lexer, functions),
        "prepare" => return prepare(lexer, functions),
        "copy" => return copy(lexer, functions),
        "begin" | "start" => return begin(lexer),
        "commit" | "end" | "rollback" | "abort" | "savepoint" | "release" => {
            return end(first, lexer);
        }
        "set" => return set(lexer),
        "reset" | "discard" | "deallocate" => (Kind::SessionControl, None),
        "listen" | "unlisten" => (Kind::SessionControl, Some(Rule::WriteStatement)),
        "insert" | "update" | "delete" | "merge" | "truncate" | "call" | "do" | "vacuum" | "analyze"
        | "analyse" | "cluster" | "reindex" | "refresh" | "lock" | "checkpoint" | "notify" => {
            (Kind::Write, Some(Rule::WriteStatement))
        }
        "create" | "alter" | "drop" | "comment" | "grant" | "revoke" | "security" | "reassign" | "import" => {
            (Kind::Ddl, Some(Rule::Ddl))
        }
        _ => (Kind::Unknown, Some(Rule::Unrecognised)),
    };
    let mut c = Classification::new(kind);
    if let Some(rule) = rule {
        c.force(rule);
    }
    c.state_words = matches!(word, "create" | "listen");
    scan(lexer, functions, &mut c);
    c
}

/// A query (`SELECT`, `WITH`, `VALUES`, `TABLE`, or one in parentheses) from its first
/// token: a read unless a rule in it says otherwise.
fn query(lexer: &mut Lexer, functions: &impl Functions) -> Classification {
    let mut c = Classification::new(Kind::Read);
    scan(lexer, functions, &mut c);
    c.kind = match c.forced {
        None => Kind::Read,
        Some(Rule::UnknownFunction) => Kind::Unknown,
        Some(_) => Kind::Write,
    };
    c
}

/// `EXPLAIN [ANALYZE] [VERBOSE] statement`, `EXPLAIN (option [value], ...) statement`: with
/// ANALYZE the statement runs and decides; without, nothing runs and it is a read.
fn explain(lexer: &mut Lexer, functions: &impl Functions) -> Classification {
    let mut analyze = false;
    let mut peek = lexer.clone();
    match next_in(&mut peek) {
        Some(tok) if tok.is_punct(b'(') => {
            *lexer = peek;
            let mut option_start = true;
            while let Some(tok) = next_in(lexer) {
                if tok.is_punct(b')') {
                    break;
                }
                if option_start && (tok.is("analyze") || tok.is("analyse")) {
                    let mut value = lexer.clone();
                    analyze = !value
                        .next()
                        .is_some_and(|v| v.is("false") || v.is("off") || v.is("0") || v.is("no"));
                }
                option_start = tok.is_punct(b',');
            }
        }
        Some(tok) if tok.is("analyze") || tok.is("analyse") => {
            *lexer = peek;
            analyze = true;
        }
        _ => {}
    }
    let mut peek = lexer.clone();
    if next_in(&mut peek).is_some_and(|tok| tok.is("verbose")) {
        *lexer = peek;
    }
    let inner = statement(lexer, functions);
    if analyze {
        Classification {
            transaction: Transaction::None,
            ..inner
        }
    } else {
        Classification::new(Kind::Read)
    }
}

/// `DECLARE name ... CURSOR [WITH HOLD] FOR query`: the query decides (a `WITH HOLD` cursor
/// pins, found by `server_state`).
fn declare(lexer: &mut Lexer, functions: &impl Functions) -> Classification {
    while let Some(tok) = next_in(lexer) {
        if tok.is("for") {
            let mut c = query(lexer, functions);
            c.state_words = true;
            return c;
        }
    }
    unrecognised()
}

/// `PREPARE TRANSACTION 'id'` (two-phase: a write), or SQL `PREPARE name [(types)] AS
/// statement`: the statement decides, and the session is pinned to the node that has it.
fn prepare(lexer: &mut Lexer, functions: &impl Functions) -> Classification {
    if lexer.clone().next().is_some_and(|tok| tok.is("transaction")) {
        let mut c = Classification::new(Kind::TransactionControl);
        c.force(Rule::WriteStatement);
        c.transaction = Transaction::PrepareTransaction;
        return c;
    }
    while let Some(tok) = next_in(lexer) {
        if tok.is("as") {
            let mut c = first_word(lexer, functions);
            c.transaction = Transaction::None;
            c.pin("SQL PREPARE");
            return c;
        }
    }
    unrecognised()
}

/// `COPY (query) TO ...` is the query; `COPY table [(columns)] FROM` a write, `TO` a read.
fn copy(lexer: &mut Lexer, functions: &impl Functions) -> Classification {
    let mut peek = lexer.clone();
    if next_in(&mut peek).is_some_and(|tok| tok.is_punct(b'(')) {
        *lexer = peek;
        let mut c = statement(lexer, functions);
        c.transaction = Transaction::None;
        next_in(lexer); // its `)`
        return c;
    }
    let mut depth = 0;
    while let Some(tok) = next_in(lexer) {
        if tok.is_punct(b'(') {
            depth += 1;
        } else if tok.is_punct(b')') {
            depth -= 1;
        } else if depth == 0 && tok.is("from") {
            let mut c = Classification::new(Kind::Write);
            c.force(Rule::WriteStatement);
            return c;
        } else if depth == 0 && tok.is("to") {
            return Classification::new(Kind::Read);
        }
    }
    unrecognised()
}

/// Whether the text's first statement is a `COPY` (data would follow its Query).
pub fn starts_with_copy(sql: &[u8]) -> bool {
    let mut lexer = Lexer::new(sql);
    next_in(&mut lexer).is_some_and(|tok| tok.is("copy"))
}

/// `BEGIN [WORK | TRANSACTION] [modes]`, `START TRANSACTION [modes]`.
fn begin(lexer: &mut Lexer) -> Classification {
    let mut peek = lexer.clone();
    if next_in(&mut peek).is_some_and(|tok| tok.is("work") || tok.is("transaction")) {
        *lexer = peek;
    }
    let Some(modes) = modes(lexer) else {
        return unrecognised();
    };
    let mut c = Classification::new(Kind::TransactionControl);
    c.transaction = Transaction::Begin(modes);
    c.begins = true;
    c.modes = modes;
    c
}

/// Transaction modes up to the end of the statement; `None` for anything else.
fn modes(lexer: &mut Lexer) -> Option<Modes> {
    let mut modes = Modes::default();
    while let Some(tok) = next_in(lexer) {
        if tok.is_punct(b',') || tok.is("deferrable") || tok.is("not") {
            continue;
        }
        if tok.is("isolation") {
            next_in(lexer).filter(|t| t.is("level"))?;
            let level = next_in(lexer)?;
            if level.is("serializable") {
                modes.serializable = Some(true);
            } else if level.is("repeatable") && next_in(lexer)?.is("read")
                || level.is("read")
                    && next_in(lexer).is_some_and(|t| t.is("committed") || t.is("uncommitted"))
            {
                modes.serializable = Some(false);
            } else {
                return None;
            }
        } else if tok.is("read") {
            let access = next_in(lexer)?;
            modes.read_only = Some(if access.is("only") {
                true
            } else if access.is("write") {
                false
            } else {
                return None;
            });
        } else {
            return None;
        }
    }
    Some(modes)
}

/// `COMMIT`, `END`, `ROLLBACK`, `ABORT` (`AND [NO] CHAIN`), `ROLLBACK TO`, `SAVEPOINT`,
/// `RELEASE`, and the two-phase `COMMIT PREPARED`/`ROLLBACK PREPARED` (writes).
fn end(first: Token, lexer: &mut Lexer) -> Classification {
    let mut c = Classification::new(Kind::TransactionControl);
    let (mut to, mut prepared, mut chain) = (false, false, false);
    let mut previous: Option<Token> = None;
    while let Some(tok) = next_in(lexer) {
        to |= tok.is("to");
        prepared |= tok.is("prepared");
        chain |= tok.is("chain") && !previous.is_some_and(|p| p.is("no"));
        previous = Some(tok);
    }
    c.transaction = if first.is("savepoint") || first.is("release") || to {
        Transaction::Savepoint
    } else if prepared {
        c.force(Rule::WriteStatement);
        Transaction::None
    } else if first.is("commit") || first.is("end") {
        Transaction::Commit { chain }
    } else {
        Transaction::Rollback { chain }
    };
    c
}

/// `SET`: transaction modes now (`SET TRANSACTION`, `transaction_read_only`,
/// `transaction_isolation`) or for later transactions (`SET SESSION CHARACTERISTICS`,
/// `default_transaction_*`); any other setting is session control a replica may run.
fn set(lexer: &mut Lexer) -> Classification {
    let mut c = Classification::new(Kind::SessionControl);
    let mut local = false;
    let mut name = next_in(lexer);
    if name.is_some_and(|t| t.is("session") || t.is("local")) {
        local = name.is_some_and(|t| t.is("local"));
        name = next_in(lexer);
    }
    let Some(name) = name else { return c };
    let mut buf = [0u8; 32];
    let setting = folded(name, &mut buf).unwrap_or_default();
    let effect = match setting {
        "transaction" if !lexer.clone().next().is_some_and(|t| t.is("snapshot")) => {
            modes(lexer).map(Transaction::SetTransaction)
        }
        "characteristics" => {
            let as_transaction = next_in(lexer).is_some_and(|t| t.is("as"))
                && next_in(lexer).is_some_and(|t| t.is("transaction"));
            as_transaction
                .then(|| modes(lexer))
                .flatten()
                .map(Transaction::SetDefaults)
        }
        "transaction_read_only" | "transaction_isolation" => {
            Some(Transaction::SetTransaction(setting_modes(setting, lexer)))
        }
        "default_transaction_read_only" | "default_transaction_isolation" if !local => {
            Some(Transaction::SetDefaults(setting_modes(setting, lexer)))
        }
        _ => Some(Transaction::None),
    };
    match effect {
        None => return unrecognised(),
        Some(Transaction::SetTransaction(modes)) => {
            c.kind = Kind::TransactionControl;
            c.modes = modes;
            c.transaction = Transaction::SetTransaction(modes);
        }
        Some(Transaction::SetDefaults(modes)) => {
            c.changes_defaults = true;
            // A serializable default makes the rest of the text serializable.
            c.modes.serializable = modes.serializable.filter(|s| *s);
            c.transaction = Transaction::SetDefaults(modes);
        }
        Some(_) => {}
    }
    c
}

/// The modes `SET [default_]transaction_{read_only|isolation} {TO|=} value` sets; nothing
/// for a value it cannot read (`DEFAULT`, an expression).
fn setting_modes(setting: &str, lexer: &mut Lexer) -> Modes {
    let mut modes = Modes::default();
    let Some(value) = next_in(lexer)
        .filter(|t| t.is("to") || t.is_punct(b'='))
        .and_then(|_| next_in(lexer))
    else {
        return modes;
    };
    let text = match value.kind {
        TokenKind::String => &value.text[1..value.text.len().saturating_sub(1).max(1)],
        _ => value.text,
    };
    let is = |w: &str| text.eq_ignore_ascii_case(w.as_bytes());
    if setting.ends_with("read_only") {
        if is("on") || is("true") || is("yes") || is("1") {
            modes.read_only = Some(true);
        } else if is("off") || is("false") || is("no") || is("0") {
            modes.read_only = Some(false);
        }
    } else if is("serializable") {
        modes.serializable = Some(true);
    } else if is("repeatable read") || is("read committed") || is("read uncommitted") {
        modes.serializable = Some(false);
    }
    modes
}

/// The next token of the statement; `None` at its `;` (not consumed) or the end.
fn next_in<'a>(lexer: &mut Lexer<'a>) -> Option<Token<'a>> {
    let tok = lexer.next()?;
    if tok.is_punct(b';') {
        lexer.put_back(tok);
        return None;
    }
    Some(tok)
}

/// Skips to the statement's `;` or end, or to a `)` closing a parenthesis opened before it.
fn skip_rest(lexer: &mut Lexer) {
    let mut depth = 0usize;
    while let Some(tok) = next_in(lexer) {
        if tok.is_punct(b'(') {
            depth += 1;
        } else if tok.is_punct(b')') {
            if depth == 0 {
                lexer.put_back(tok);
                return;
            }
            depth -= 1;
        }
    }
}

fn unrecognised() -> Classification {
    let mut c = Classification::new(Kind::Unknown);
    c.force(Rule::Unrecognised);
    c
}

/// Reads the rest of a statement (up to its `;`, or a `)` closing a parenthesis opened
/// before it) for what its tokens say: locking clauses, writing CTEs and `INTO` (which only
/// matter in queries: in other statements an earlier rule has decided) and function calls.
fn scan(lexer: &mut Lexer, functions: &impl Functions, c: &mut Classification) {
    let mut depth = 0usize;
    let mut before: Option<Token> = None;
    let mut last: Option<Token> = None;
    while let Some(tok) = lexer.next() {
        match tok.kind {
            TokenKind::Punct => match tok.text[0] {
                b';' => {
                    lexer.put_back(tok);
                    return;
                }
                b'(' => {
                    if let Some(name) = last {
                        if matches!(name.kind, TokenKind::Word | TokenKind::QuotedIdent) {
                            call(name, before, lexer, functions, c);
                        }
                    }
                    depth += 1;
                }
                b')' if depth == 0 => {
                    lexer.put_back(tok);
                    return;
                }
                b')' => depth -= 1,
                _ => {}
            },
            TokenKind::Word => {
                let lower = tok.text[0] | 0x20;
                if lower == b'f' && tok.is("for") {
                    let next = lexer.clone().next();
                    if next.is_some_and(|t| t.is("update") || t.is("share") || t.is("no") || t.is("key")) {
                        c.force(Rule::LockingClause);
                    }
                } else if lower == b'i' && tok.is("into") {
                    c.force(Rule::SelectInto);
                    let next = lexer.clone().next();
                    c.state_words |= next.is_some_and(|t| {
                        t.is("temp") || t.is("temporary") || t.is("global") || t.is("local")
                    });
                } else if lower == b'p'
                    && tok.text.len() > 8
                    && tok.text[..8].eq_ignore_ascii_case(b"pg_temp.")
                {
                    c.state_words = true;
                } else if matches!(lower, b'i' | b'u' | b'd' | b'm')
                    && (tok.is("insert") || tok.is("update") || tok.is("delete") || tok.is("merge"))
                {
                    let nested = last.is_some_and(|t| t.is_punct(b'('));
                    c.force(if nested {
                        Rule::WritingCte
                    } else {
                        Rule::WriteStatement
                    });
                }
            }
            _ => {}
        }
        before = last;
        last = Some(tok);
    }
}

/// `name(` seen, `before` the token before `name`, `lexer` just after the `(`: if it is a
/// function call, what the function's name says.
fn call(
    name: Token,
    before: Option<Token>,
    lexer: &Lexer,
    functions: &impl Functions,
    c: &mut Classification,
) {
    let mut buf = [0u8; 63];
    let Some(function) = folded(name, &mut buf) else {
        c.force(Rule::UnknownFunction);
        return;
    };
    if name.kind == TokenKind::Word && SYNTAX.binary_search(&function).is_ok() {
        return;
    }
    let not_a_call = before.is_some_and(|b| {
        b.is("as")
            || b.is("tablesample")
            || b.is("with")
            || b.is("recursive")
            || b.is_punct(b':')
            || b.is_punct(b')')
            || b.is_punct(b',') && cte_columns(lexer.clone())
    });
    if not_a_call {
        return;
    }
    match function {
        "nextval" | "setval" => c.force(Rule::SequenceFunction),
        "currval" | "lastval" => {
            c.force(Rule::SequenceFunction);
            c.pin("currval/lastval (the session's last sequence values)");
        }
        "set_config" => {
            c.force(Rule::SetConfig);
            c.state_words = true;
        }
        "lo_creat" | "lo_create" | "lo_import" | "lo_unlink" | "lowrite" | "lo_put" | "lo_from_bytea"
        | "lo_truncate" | "lo_truncate64" | "lo_open" => c.force(Rule::LargeObjectWrite),
        f if (f.starts_with("pg_advisory") || f.starts_with("pg_try_advisory")) && f.contains("lock") => {
            c.force(Rule::AdvisoryLock);
            c.state_words = true;
        }
        // Only the first rule is kept: no need to ask once one decided.
        _ if c.forced.is_some() => {}
        f => match functions.volatility(f) {
            Some(Volatility::Volatile) => c.force(Rule::VolatileFunction),
            Some(Volatility::Stable | Volatility::Immutable) => {}
            None => c.force(Rule::UnknownFunction),
        },
    }
}

/// Whether the parenthesis `lexer` is in (just after its `(`) is a CTE's column list:
/// `name (columns) AS [NOT] [MATERIALIZED] (`.
fn cte_columns(mut lexer: Lexer) -> bool {
    let mut depth = 1;
    while let Some(tok) = lexer.next() {
        if tok.is_punct(b'(') {
            depth += 1;
        } else if tok.is_punct(b')') {
            depth -= 1;
            if depth == 0 {
                return lexer.next().is_some_and(|t| t.is("as"))
                    && lexer
                        .next()
                        .is_some_and(|t| t.is_punct(b'(') || t.is("not") || t.is("materialized"));
            }
        } else if tok.is_punct(b';') {
            break;
        }
    }
    false
}

/// Words followed by `(` that are SQL syntax or type names with a modifier, not function
/// calls (sorted: binary search).
const SYNTAX: [&str; 87] = [
    "all",
    "and",
    "any",
    "array",
    "as",
    "at",
    "between",
    "bit",
    "by",
    "case",
    "cast",
    "char",
    "character",
    "coalesce",
    "cube",
    "current_time",
    "current_timestamp",
    "dec",
    "decimal",
    "distinct",
    "else",
    "escape",
    "except",
    "exists",
    "extract",
    "filter",
    "first",
    "float",
    "for",
    "from",
    "greatest",
    "group",
    "grouping",
    "having",
    "ilike",
    "in",
    "intersect",
    "interval",
    "is",
    "join",
    "json",
    "json_array",
    "json_arrayagg",
    "json_object",
    "json_objectagg",
    "lateral",
    "least",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "materialized",
    "nchar",
    "next",
    "not",
    "nullif",
    "numeric",
    "offset",
    "on",
    "only",
    "or",
    "over",
    "overlaps",
    "overlay",
    "position",
    "repeatable",
    "returning",
    "rollup",
    "row",
    "select",
    "sets",
    "similar",
    "some",
    "substring",
    "then",
    "time",
    "timestamp",
    "to",
    "treat",
    "trim",
    "union",
    "using",
    "values",
    "varchar",
    "varying",
    "when",
    "where",
];

/// A word or quoted identifier as Postgres folds a name (unqualified; unquoted ASCII letters
/// lower-cased, quoted text verbatim), in `buf` (longer names are cut, as Postgres cuts them
/// at 63 bytes); `None` for other tokens and names that are not UTF-8.
fn folded<'b, const N: usize>(tok: Token, buf: &'b mut [u8; N]) -> Option<&'b str> {
    let mut n = 0;
    match tok.kind {
        TokenKind::Word => {
            for &c in unqualified(tok.text).iter().take(N) {
                buf[n] = c.to_ascii_lowercase();
                n += 1;
            }
        }
        TokenKind::QuotedIdent if tok.text.len() >= 2 => {
            let body = &tok.text[1..tok.text.len() - 1];
            let mut i = 0;
            while i < body.len() && n < N {
                buf[n] = body[i];
                n += 1;
                i += if body[i] == b'"' { 2 } else { 1 };
            }
        }
        _ => return None,
    }
    match std::str::from_utf8(&buf[..n]) {
        Ok(name) => Some(name),
        // Cut inside a character: keep the whole ones.
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&buf[..e.valid_up_to()]).ok(),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use Kind::*;

    /// The catalog the tests classify against.
    fn catalog() -> HashMap<String, Volatility> {
        [
            ("now", Volatility::Stable),
            ("count", Volatility::Immutable),
            ("lower", Volatility::Immutable),
            ("abs", Volatility::Immutable),
            ("generate_series", Volatility::Immutable),
            ("coalesce_rows", Volatility::Stable),
            ("random", Volatility::Volatile),
            ("MixedCase", Volatility::Immutable),
            ("audit_write", Volatility::Volatile),
            ("jsonb_build_object", Volatility::Stable),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .collect()
    }

    fn check(sql: &str, rule: Rule, kind: Kind, pin: bool) {
        let c = classify(sql.as_bytes(), &catalog());
        assert_eq!(
            (c.rule().as_str(), c.kind, c.pin.is_some()),
            (rule.as_str(), kind, pin),
            "{sql:?} gave {c:?}"
        );
        assert_eq!(c.replica_allowed(), rule.allows_replica(), "{sql:?}");
    }

    /// Text → (rule, kind, pins) for every rule, with the traps a lexer can fall into.
    #[test]
    fn classification_table() {
        use Rule::*;
        #[rustfmt::skip]
        let table: &[(&str, Rule, Kind, bool)] = &[
            // pgbench -S and plain reads.
            ("SELECT abalance FROM pgbench_accounts WHERE aid = $1", Read, Kind::Read, false),
            ("SELECT abalance FROM pgbench_accounts WHERE aid = 42;", Read, Kind::Read, false),
            ("select count(*), now(), lower(x) from t where a in (1, 2) and exists (select 1)", Read, Kind::Read, false),
            ("VALUES (1), (2)", Read, Kind::Read, false),
            ("TABLE t", Read, Kind::Read, false),
            ("SHOW work_mem", Read, Kind::Read, false),
            ("(SELECT 1) UNION ALL (SELECT 2)", Read, Kind::Read, false),
            ("WITH x(a, b) AS (SELECT 1, 2), y (c) AS MATERIALIZED (SELECT 3) SELECT * FROM x, y", Read, Kind::Read, false),
            ("SELECT CAST(a AS numeric(10,2)), b::varchar(10), '1'::timestamp(3), coalesce(a, b) FROM t", Read, Kind::Read, false),
            ("SELECT DISTINCT ON (a) a FROM t JOIN u USING (id) ORDER BY a", Read, Kind::Read, false),
            ("SELECT * FROM generate_series(1, 3) g(i), (VALUES (1)) v(a), t AS w(b)", Read, Kind::Read, false),
            ("SELECT count(*) FILTER (WHERE a > 1) OVER (PARTITION BY b) FROM t", Read, Kind::Read, false),
            ("SELECT substring(s from 1 for 2), extract(epoch from now()) FROM t", Read, Kind::Read, false),
            ("SELECT \"MixedCase\"(1), pg_catalog.lower('A')", Read, Kind::Read, false),
            ("FETCH 10 FROM c", Read, Kind::Read, false),
            ("", Read, Kind::Read, false),
            (" ; ; ", Read, Kind::Read, false),
            // Quoting traps: nothing in a string, identifier, dollar quote or comment counts.
            ("SELECT '; DELETE FROM t'", Read, Kind::Read, false),
            ("SELECT \"update\", \"delete\" FROM t", Read, Kind::Read, false),
            ("SELECT $$ INSERT INTO t VALUES (nextval('s')) $$", Read, Kind::Read, false),
            ("SELECT $body$ ; UPDATE t SET a = 1 $body$ AS x", Read, Kind::Read, false),
            ("SELECT 1 -- ; DELETE FROM t\n", Read, Kind::Read, false),
            ("SELECT /* FOR UPDATE; INSERT */ 1", Read, Kind::Read, false),
            ("SELECT E'\\'; DELETE FROM t; '", Read, Kind::Read, false),
            ("SELECT 'it''s; UPDATE'", Read, Kind::Read, false),
            // Writes.
            ("INSERT INTO t VALUES (1)", WriteStatement, Write, false),
            ("update t set a = 1", WriteStatement, Write, false),
            ("DELETE FROM t", WriteStatement, Write, false),
            ("MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE", WriteStatement, Write, false),
            ("COPY t FROM STDIN", WriteStatement, Write, false),
            ("COPY t (a, b) FROM '/tmp/x' WITH (FORMAT csv)", WriteStatement, Write, false),
            ("COPY t TO STDOUT", Read, Kind::Read, false),
            ("COPY (SELECT * FROM t) TO STDOUT WITH (FORMAT csv, FORCE_QUOTE (a))", Read, Kind::Read, false),
            ("COPY (DELETE FROM t RETURNING *) TO STDOUT", WriteStatement, Write, false),
            ("TRUNCATE t", WriteStatement, Write, false),
            ("CALL p()", WriteStatement, Write, false),
            ("DO $$BEGIN NULL; END$$", WriteStatement, Write, false),
            ("VACUUM t", WriteStatement, Write, false),
            ("ANALYZE t", WriteStatement, Write, false),
            ("CLUSTER t", WriteStatement, Write, false),
            ("REINDEX TABLE t", WriteStatement, Write, false),
            ("REFRESH MATERIALIZED VIEW v", WriteStatement, Write, false),
            ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", WriteStatement, Write, false),
            ("CHECKPOINT", WriteStatement, Write, false),
            ("NOTIFY jobs, 'x'", WriteStatement, Write, false),
            ("LISTEN jobs", WriteStatement, SessionControl, true),
            ("UNLISTEN *", WriteStatement, SessionControl, false),
            ("PREPARE TRANSACTION 'tx1'", WriteStatement, TransactionControl, false),
            ("COMMIT PREPARED 'tx1'", WriteStatement, TransactionControl, false),
            ("ROLLBACK PREPARED 'tx1'", WriteStatement, TransactionControl, false),
            ("SELECT a INTO b FROM t", SelectInto, Write, false),
            ("SELECT a INTO TEMP b FROM t", SelectInto, Write, true),
            // DDL.
            ("CREATE TABLE t (a varchar(10) DEFAULT nextval('s'))", Ddl, Kind::Ddl, false),
            ("CREATE TABLE t2 AS SELECT * FROM t", Ddl, Kind::Ddl, false),
            ("CREATE TEMP TABLE t (a int)", Ddl, Kind::Ddl, true),
            ("CREATE TEMP TABLE t (a int) ON COMMIT DROP", Ddl, Kind::Ddl, false),
            ("ALTER TABLE t ADD COLUMN b int", Ddl, Kind::Ddl, false),
            ("DROP TABLE t", Ddl, Kind::Ddl, false),
            ("COMMENT ON TABLE t IS 'x'", Ddl, Kind::Ddl, false),
            ("GRANT SELECT ON t TO u", Ddl, Kind::Ddl, false),
            ("REVOKE ALL ON t FROM u", Ddl, Kind::Ddl, false),
            ("SECURITY LABEL ON TABLE t IS 'x'", Ddl, Kind::Ddl, false),
            ("REASSIGN OWNED BY a TO b", Ddl, Kind::Ddl, false),
            // Locking clauses, at any level.
            ("SELECT * FROM t FOR UPDATE", LockingClause, Write, false),
            ("SELECT * FROM t FOR NO KEY UPDATE OF t SKIP LOCKED", LockingClause, Write, false),
            ("select * from t for share", LockingClause, Write, false),
            ("SELECT * FROM t FOR KEY SHARE NOWAIT", LockingClause, Write, false),
            ("SELECT * FROM t WHERE id IN (SELECT id FROM u FOR UPDATE)", LockingClause, Write, false),
            ("WITH x AS (SELECT * FROM t FOR UPDATE) SELECT * FROM x", LockingClause, Write, false),
            // Writing CTEs, nested too.
            ("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", WritingCte, Write, false),
            ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", WriteStatement, Write, false),
            ("SELECT * FROM (WITH y AS (UPDATE t SET a = 1 RETURNING a) SELECT a FROM y) s", WritingCte, Write, false),
            ("WITH a AS (WITH b AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM b) SELECT * FROM a", WritingCte, Write, false),
            ("WITH x AS NOT MATERIALIZED (MERGE INTO t USING u ON true WHEN MATCHED THEN DO NOTHING RETURNING *) SELECT 1", WritingCte, Write, false),
            // Functions.
            ("SELECT nextval('s')", SequenceFunction, Write, false),
            ("SELECT pg_catalog.nextval('s')", SequenceFunction, Write, false),
            ("SELECT setval('s', 1)", SequenceFunction, Write, false),
            ("SELECT currval('s')", SequenceFunction, Write, true),
            ("SELECT LASTVAL()", SequenceFunction, Write, true),
            ("SELECT pg_advisory_lock(1)", AdvisoryLock, Write, true),
            ("SELECT pg_try_advisory_lock_shared(1, 2)", AdvisoryLock, Write, true),
            ("SELECT pg_advisory_xact_lock(1)", AdvisoryLock, Write, false),
            ("SELECT pg_advisory_unlock_all()", AdvisoryLock, Write, false),
            ("SELECT set_config('a.b', 'c', true)", SetConfig, Write, false),
            ("SELECT set_config('a.b', 'c', false)", SetConfig, Write, true),
            ("SELECT lo_create(0)", LargeObjectWrite, Write, false),
            ("SELECT lo_import('/tmp/x')", LargeObjectWrite, Write, false),
            ("SELECT lo_unlink(42)", LargeObjectWrite, Write, false),
            ("SELECT lowrite(fd, 'x')", LargeObjectWrite, Write, false),
            ("SELECT lo_put(42, 0, 'x')", LargeObjectWrite, Write, false),
            ("SELECT lo_from_bytea(0, 'x')", LargeObjectWrite, Write, false),
            ("SELECT lo_truncate(fd, 0)", LargeObjectWrite, Write, false),
            ("SELECT random()", VolatileFunction, Write, false),
            ("SELECT a FROM t WHERE b = public.audit_write(a)", VolatileFunction, Write, false),
            ("SELECT unheard_of(1)", UnknownFunction, Unknown, false),
            ("SELECT \"mixedcase\"(1)", UnknownFunction, Unknown, false),
            ("INSERT INTO t VALUES (currval('s'))", WriteStatement, Write, true),
            // EXPLAIN: ANALYZE follows the statement, plain EXPLAIN runs nothing.
            ("EXPLAIN SELECT * FROM t", Read, Kind::Read, false),
            ("EXPLAIN DELETE FROM t", Read, Kind::Read, false),
            ("EXPLAIN ANALYZE SELECT * FROM t", Read, Kind::Read, false),
            ("EXPLAIN ANALYZE VERBOSE DELETE FROM t", WriteStatement, Write, false),
            ("EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET a = 1", WriteStatement, Write, false),
            ("EXPLAIN (FORMAT JSON, ANALYZE true) SELECT nextval('s')", SequenceFunction, Write, false),
            ("EXPLAIN (ANALYZE off) DELETE FROM t", Read, Kind::Read, false),
            // Session pins that are no write go to the primary.
            ("DECLARE c CURSOR WITH HOLD FOR SELECT * FROM t", PinsSession, Kind::Read, true),
            ("DECLARE c NO SCROLL CURSOR FOR SELECT * FROM t", Read, Kind::Read, false),
            ("SELECT * FROM pg_temp.t", PinsSession, Kind::Read, true),
            ("DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE", LockingClause, Write, false),
            ("PREPARE p (int) AS SELECT * FROM t WHERE a = $1", PinsSession, Kind::Read, true),
            ("PREPARE p AS INSERT INTO t VALUES (1)", WriteStatement, Write, true),
            // Multi-statement texts: one write makes the whole text a write.
            ("SELECT 1; SELECT 2", Read, Kind::Read, false),
            ("SELECT 1; INSERT INTO t VALUES (1); SELECT 2", WriteStatement, Write, false),
            ("SELECT 1; CREATE TEMP TABLE x (a int)", Ddl, Kind::Ddl, true),
            // Transactions.
            ("BEGIN", ReadWriteTransaction, TransactionControl, false),
            ("BEGIN READ WRITE", ReadWriteTransaction, TransactionControl, false),
            ("BEGIN READ ONLY; SELECT 1", ReadOnlyTransaction, Kind::Read, false),
            ("begin transaction isolation level repeatable read, read only", ReadOnlyTransaction, TransactionControl, false),
            ("START TRANSACTION READ ONLY", ReadOnlyTransaction, TransactionControl, false),
            ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY", Serializable, TransactionControl, false),
            ("BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE", Serializable, TransactionControl, false),
            ("BEGIN; SET TRANSACTION READ ONLY; SELECT 1", ReadOnlyTransaction, Kind::Read, false),
            ("BEGIN; SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", Serializable, TransactionControl, false),
            ("BEGIN; SET LOCAL transaction_read_only = on; SELECT 1", ReadOnlyTransaction, Kind::Read, false),
            ("BEGIN READ ONLY; SELECT 1; COMMIT; BEGIN; SELECT 2", ReadWriteTransaction, Kind::Read, false),
            ("BEGIN READ ONLY; DELETE FROM t", WriteStatement, Write, false),
            ("BEGIN ISOLATION LEVEL SOMETHING", Unrecognised, Unknown, false),
            ("SET TRANSACTION READ WRITE", ReadWriteTransaction, TransactionControl, false),
            ("SET default_transaction_isolation = 'serializable'; SELECT 1", Serializable, Kind::Read, false),
            ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", Read, SessionControl, false),
            ("SET default_transaction_read_only = on", Read, SessionControl, false),
            ("COMMIT", Read, TransactionControl, false),
            ("END", Read, TransactionControl, false),
            ("ROLLBACK", Read, TransactionControl, false),
            ("ABORT", Read, TransactionControl, false),
            ("SAVEPOINT a; RELEASE a; ROLLBACK TO SAVEPOINT a", Read, TransactionControl, false),
            // Session control a replica may run.
            ("SET work_mem = '64MB'", Read, SessionControl, false),
            ("RESET ALL", Read, SessionControl, false),
            ("DISCARD ALL", Read, SessionControl, false),
            ("DEALLOCATE p", Read, SessionControl, false),
            // Hints.
            ("/* switchyard: primary */ SELECT 1", HintPrimary, Kind::Read, false),
            ("/*SWITCHYARD:PRIMARY*/SELECT 1", HintPrimary, Kind::Read, false),
            ("-- switchyard : Primary\nSELECT 1", HintPrimary, Kind::Read, false),
            ("/* app: x */ /* switchyard: primary */ SELECT 1", HintPrimary, Kind::Read, false),
            ("SELECT /* switchyard: primary */ 1", Read, Kind::Read, false),
            ("/* switchyard: primary please */ SELECT 1", Read, Kind::Read, false),
            ("/* switchyard: replica */ INSERT INTO t VALUES (1)", WriteStatement, Write, false),
            ("/* switchyard: replica */ BEGIN", ReadWriteTransaction, TransactionControl, false),
            ("/* switchyard: primary */ DELETE FROM t", WriteStatement, Write, false),
            // Unrecognised or broken.
            ("EXECUTE p(1)", Unrecognised, Unknown, false),
            ("FROBNICATE t", Unrecognised, Unknown, false),
            ("SELECT 'unterminated", Unrecognised, Unknown, false),
            ("SELECT 1 /* unterminated", Unrecognised, Unknown, false),
            ("SELECT $$x", Unrecognised, Unknown, false),
            ("\"select\" 1", Unrecognised, Unknown, false),
        ];
        for &(sql, rule, kind, pin) in table {
            check(sql, rule, kind, pin);
            // The fast path answers only what the full reading answers too, and only for
            // texts that create no server-side state (the session then skips that pass).
            let plain = classify(sql.as_bytes(), &catalog()).plain_read();
            assert_eq!(plain, plain_read(sql.as_bytes()), "{sql:?}");
            if plain {
                assert_eq!(
                    classify_lexed(sql.as_bytes(), &catalog()),
                    Classification::new(Kind::Read),
                    "{sql:?}"
                );
                assert_eq!(super::super::server_state(sql.as_bytes()), None, "{sql:?}");
            }
        }
        for sql in [
            "SELECT temp, hold, listen FROM advisory",
            "TABLE temp",
            "SHOW hold",
        ] {
            assert!(classify(sql.as_bytes(), &catalog()).plain_read(), "{sql:?}");
            assert_eq!(super::super::server_state(sql.as_bytes()), None, "{sql:?}");
        }
        for sql in [
            "SELECT a FROM t FOR UPDATE",
            "SELECT a INTO b FROM t",
            "SELECT * FROM pg_temp.t",
            "SHOW x; DELETE FROM t",
            "INSERT INTO t SELECT 1",
            "SELECT nextval('s')",
        ] {
            assert!(!plain_read(sql.as_bytes()), "{sql:?}");
        }
        assert!(plain_read(
            b"SELECT abalance FROM pgbench_accounts WHERE aid = $1"
        ));
        assert!(plain_read(
            b"SELECT abalance FROM pgbench_accounts WHERE aid = 4711;"
        ));
    }

    #[test]
    fn hints_are_reported() {
        let f = catalog();
        assert_eq!(
            classify(b"/* Switchyard:  replica */ SELECT 1", &f).hint,
            Some(Hint::Replica)
        );
        assert_eq!(
            classify(b"/* switchyard: primary */ SELECT 1", &f).hint,
            Some(Hint::Primary)
        );
        assert_eq!(classify(b"SELECT 1", &f).hint, None);
        let replica = classify(b"/* switchyard: replica */ SELECT 1", &f);
        assert_eq!(replica.rule(), Rule::Read);
    }

    /// A lone plain `BEGIN` is recognised with its tag; one with modes, a hint, another
    /// statement after it, or an open quote is not.
    #[test]
    fn lone_begins() {
        for (sql, tag) in [
            ("BEGIN", "BEGIN"),
            ("begin;", "BEGIN"),
            ("  BEGIN WORK ; ", "BEGIN"),
            ("Begin Transaction", "BEGIN"),
            ("-- why\nSTART TRANSACTION", "START TRANSACTION"),
            ("/* a comment */ BEGIN", "BEGIN"),
        ] {
            assert_eq!(lone_begin(sql.as_bytes()), Some(tag), "{sql:?}");
        }
        for sql in [
            "BEGIN READ ONLY",
            "BEGIN ISOLATION LEVEL SERIALIZABLE",
            "START TRANSACTION READ WRITE",
            "BEGIN; SELECT 1",
            "BEGIN; COMMIT",
            "BEGIN;;",
            "START",
            "BEGINNING",
            "SELECT 1",
            "/* switchyard: primary */ BEGIN",
            "BEGIN /* open",
            "",
        ] {
            assert_eq!(lone_begin(sql.as_bytes()), None, "{sql:?}");
        }
    }

    #[test]
    fn transaction_effects() {
        let f = catalog();
        let t = |sql: &str| classify(sql.as_bytes(), &f).transaction;
        let modes = |read_only, serializable| Modes {
            read_only,
            serializable,
        };
        assert_eq!(t("BEGIN"), Transaction::Begin(modes(None, None)));
        assert_eq!(
            t("BEGIN WORK READ ONLY"),
            Transaction::Begin(modes(Some(true), None))
        );
        assert_eq!(
            t("START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE"),
            Transaction::Begin(modes(Some(false), Some(true)))
        );
        assert_eq!(
            t("SET TRANSACTION ISOLATION LEVEL READ COMMITTED"),
            Transaction::SetTransaction(modes(None, Some(false)))
        );
        assert_eq!(
            t("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"),
            Transaction::SetDefaults(modes(Some(true), None))
        );
        assert_eq!(
            t("SET default_transaction_read_only TO off"),
            Transaction::SetDefaults(modes(Some(false), None))
        );
        assert_eq!(
            t("SET SESSION default_transaction_isolation = 'repeatable read'"),
            Transaction::SetDefaults(modes(None, Some(false)))
        );
        assert_eq!(
            t("SET LOCAL default_transaction_read_only = on"),
            Transaction::None
        );
        assert_eq!(t("COMMIT AND CHAIN"), Transaction::Commit { chain: true });
        assert_eq!(t("COMMIT AND NO CHAIN"), Transaction::Commit { chain: false });
        assert_eq!(t("ABORT"), Transaction::Rollback { chain: false });
        assert_eq!(t("ROLLBACK TO a"), Transaction::Savepoint);
        assert_eq!(t("PREPARE TRANSACTION 'x'"), Transaction::PrepareTransaction);
        assert_eq!(t("SELECT 1; BEGIN"), Transaction::Begin(modes(None, None)));
        assert_eq!(t("SELECT 1"), Transaction::None);
    }

    /// The session's defaults: a plain BEGIN under a read-only default may go to a replica,
    /// a serializable default sends everything that does not choose its level to the primary.
    #[test]
    fn session_defaults() {
        let f = catalog();
        let read_only = SessionDefaults {
            read_only: true,
            serializable: false,
        };
        let serializable = SessionDefaults {
            read_only: true,
            serializable: true,
        };
        let rule = |sql: &str, d| classify(sql.as_bytes(), &f).rule_under(d);
        assert_eq!(rule("BEGIN", read_only), Rule::ReadOnlyTransaction);
        assert_eq!(rule("BEGIN READ WRITE", read_only), Rule::ReadWriteTransaction);
        assert_eq!(
            rule("BEGIN; INSERT INTO t VALUES (1)", read_only),
            Rule::WriteStatement
        );
        assert_eq!(
            rule("SET default_transaction_read_only = off; BEGIN", read_only),
            Rule::ReadWriteTransaction
        );
        assert_eq!(rule("SELECT 1", serializable), Rule::Serializable);
        assert_eq!(
            rule("BEGIN ISOLATION LEVEL REPEATABLE READ", serializable),
            Rule::ReadOnlyTransaction
        );
        assert_eq!(
            rule("/* switchyard: primary */ BEGIN", read_only),
            Rule::HintPrimary
        );
    }

    /// A pipelined batch: statements merged in order as the session would.
    #[test]
    fn batches_merge() {
        let f = catalog();
        let c = |sql: &str| classify(sql.as_bytes(), &f);
        let batch = c("BEGIN READ ONLY").merge(c("SELECT 1")).merge(c("SELECT 2"));
        assert_eq!(
            (batch.rule(), batch.kind),
            (Rule::ReadOnlyTransaction, Kind::Read)
        );
        let batch = c("SELECT 1")
            .merge(c("UPDATE t SET a = 1"))
            .merge(c("SELECT nextval('s')"));
        assert_eq!((batch.rule(), batch.kind), (Rule::WriteStatement, Kind::Write));
        let batch = c("SELECT 1").merge(c("SELECT currval('s')"));
        assert_eq!(
            batch.pin,
            Some("currval/lastval (the session's last sequence values)")
        );
        let batch = c("/* switchyard: primary */ SELECT 1").merge(c("/* switchyard: replica */ SELECT 2"));
        assert_eq!(batch.rule(), Rule::HintPrimary);
    }

    #[test]
    fn rule_ids_are_distinct_kebab_case() {
        let mut ids: Vec<&str> = Rule::ALL.iter().map(|r| r.as_str()).collect();
        assert!(ids
            .iter()
            .all(|id| id.bytes().all(|c| c.is_ascii_lowercase() || c == b'-')));
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), Rule::ALL.len());
        assert!(SYNTAX.windows(2).all(|w| w[0] < w[1]), "SYNTAX must stay sorted");
    }

    #[test]
    fn garbage_does_not_panic() {
        let f = catalog();
        for s in [
            &b"'"[..],
            b"$",
            b"$a",
            b"/*",
            b"--",
            b"(",
            b")",
            b"))) SELECT (",
            b"\xff\xfe(;",
            b"SELECT \xff\xfe(1)",
            b"SELECT \"\"(1)",
            b"SELECT \"",
            b"EXPLAIN (",
            b"EXPLAIN (ANALYZE",
            b"COPY (",
            b"BEGIN ISOLATION",
            b"SET",
            b"SET default_transaction_read_only = ''",
            b"PREPARE",
            b"DECLARE c CURSOR FOR",
            b"E'\\",
        ] {
            let _ = classify(s, &f);
        }
        let long = format!("SELECT {}(1)", "é".repeat(40));
        assert_eq!(classify(long.as_bytes(), &f).rule(), Rule::UnknownFunction);
    }

    /// Prints the cost of classifying pgbench -S's statement (and a longer read); run with
    /// `cargo test -p switchyard --release --lib cost_of_pgbench_select -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn cost_of_pgbench_select() {
        let f = catalog();
        let n: u32 = std::env::var("COST_N")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1_000_000);
        for sql in [
            &b"SELECT abalance FROM pgbench_accounts WHERE aid = $1"[..],
            b"SELECT abalance FROM pgbench_accounts WHERE aid = 471142;",
            b"SELECT a.id, lower(a.name), count(*) FROM accounts a JOIN orders o ON o.account = a.id \
              WHERE a.id = $1 AND o.created > now() - interval '1 day' GROUP BY 1, 2",
        ]
        .into_iter()
        .filter(|sql| std::env::var("COST_ONLY").map_or(true, |o| sql.starts_with(o.as_bytes())))
        {
            let start = std::time::Instant::now();
            for _ in 0..n {
                std::hint::black_box(classify(std::hint::black_box(sql), &f));
            }
            let ns = start.elapsed().as_nanos() as f64 / f64::from(n.max(1));
            println!("{ns:.0} ns per classify of {:?}", String::from_utf8_lossy(sql));
        }
    }
}
