//! `--kafka-property` settings as librdkafka sees them.
//!
//! librdkafka knows the scope of each of its properties — consumer, producer or both, the C/P
//! column of its `CONFIGURATION.md` — and warns (`CONFWARN … is a consumer property and will be
//! ignored by this producer instance`) when a client is given one that is not its own. Its own
//! table of properties, which `rd_kafka_conf_properties_show` prints (it is the source of
//! `CONFIGURATION.md`), is read once per process ([`catalogue`]), so that:
//!
//! - each client gets only the properties of its kind ([`Routed`]): consumer properties go to the
//!   consumers, producer properties to the producers (and the admin client, a producer to
//!   librdkafka), the ones of both kinds everywhere;
//! - an alias is known as the property it stands for (`metadata.broker.list` is
//!   `bootstrap.servers`), so that the properties account-sync manages cannot come in by another
//!   name.
//!
//! [`check`] refuses, at start-up, a property librdkafka does not know or a value it refuses, naming
//! the property and never echoing the value (it may be a password).

use std::collections::HashMap;
use std::sync::OnceLock;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaConfRes;

/// Which clients a property is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Consumers only (C).
    Consumer,
    /// Producers only (P).
    Producer,
    /// Every client (*).
    Both,
}

impl Scope {
    /// Whether consumers take it.
    pub fn consumer(self) -> bool {
        self != Scope::Producer
    }

    /// Whether producers take it.
    pub fn producer(self) -> bool {
        self != Scope::Consumer
    }

    fn union(self, other: Scope) -> Scope {
        if self == other {
            self
        } else {
            Scope::Both
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    scope: Scope,
    /// For an alias, the property it stands for.
    alias_of: Option<String>,
}

/// librdkafka's properties: scope and aliases, by name.
#[derive(Debug, Default)]
pub struct Catalogue {
    entries: HashMap<String, Entry>,
}

impl Catalogue {
    /// Reads the table `rd_kafka_conf_properties_show` prints: a section of global properties,
    /// then one of topic properties, each a Markdown table `name | C/P | range | default |
    /// importance | description`, where an alias's description starts "Alias for `name`".
    /// A name in both sections keeps the global section's alias (the topic one may be a legacy
    /// property of the same name).
    pub fn parse(table: &str) -> Catalogue {
        let mut entries: HashMap<String, Entry> = HashMap::new();
        for line in table.lines() {
            let mut cols = line.splitn(6, '|');
            let (Some(name), Some(cp)) = (cols.next(), cols.next()) else {
                continue;
            };
            let scope = match cp.trim() {
                "C" => Scope::Consumer,
                "P" => Scope::Producer,
                "*" => Scope::Both,
                _ => continue,
            };
            let name = name.trim();
            let alias_of = cols.nth(3).and_then(|desc| {
                let rest = desc.split_once("Alias for `")?.1;
                Some(rest.split_once('`')?.0.to_owned())
            });
            entries
                .entry(name.to_owned())
                .and_modify(|e| e.scope = e.scope.union(scope))
                .or_insert(Entry { scope, alias_of });
        }
        Catalogue { entries }
    }

    /// How many properties it knows.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it knows none (librdkafka's table could not be read).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The scope of `name`, if librdkafka lists it.
    pub fn scope(&self, name: &str) -> Option<Scope> {
        self.entries.get(name).map(|e| e.scope)
    }

    /// The property `name` stands for: the aliased one for an alias, else `name` itself.
    pub fn canonical<'a>(&'a self, name: &'a str) -> &'a str {
        match self.entries.get(name).and_then(|e| e.alias_of.as_deref()) {
            Some(target) => target,
            None => name,
        }
    }

    /// Whether `a` and `b` are the same property (one may be an alias of the other).
    pub fn same(&self, a: &str, b: &str) -> bool {
        a == b || self.canonical(a) == self.canonical(b)
    }
}

/// librdkafka's catalogue of properties, read once. Empty if its table could not be read (then
/// every property goes to every client, as if of both kinds).
pub fn catalogue() -> &'static Catalogue {
    static CATALOGUE: OnceLock<Catalogue> = OnceLock::new();
    CATALOGUE.get_or_init(|| match properties_table() {
        Some(table) => Catalogue::parse(&table),
        None => {
            tracing::warn!("librdkafka's table of properties could not be read; every --kafka-property goes to every client");
            Catalogue::default()
        }
    })
}

/// What `rd_kafka_conf_properties_show` prints, captured in memory (no file: the container's root
/// file system is read-only).
#[cfg(unix)]
fn properties_table() -> Option<String> {
    let mut buf: *mut libc::c_char = std::ptr::null_mut();
    let mut len: libc::size_t = 0;
    // SAFETY: open_memstream gives a stream writing to a buffer it allocates; librdkafka only
    // writes to it. After fclose, `buf` and `len` hold the text (NUL-terminated), which is copied
    // and then freed with free(), as open_memstream requires.
    unsafe {
        let fp = libc::open_memstream(&mut buf, &mut len);
        if fp.is_null() {
            return None;
        }
        rdkafka::bindings::rd_kafka_conf_properties_show(fp);
        if libc::fclose(fp) != 0 || buf.is_null() {
            libc::free(buf.cast());
            return None;
        }
        let text =
            String::from_utf8_lossy(std::slice::from_raw_parts(buf.cast::<u8>(), len)).into_owned();
        libc::free(buf.cast());
        Some(text)
    }
}

#[cfg(not(unix))]
fn properties_table() -> Option<String> {
    None
}

/// The user's `--kafka-property` pairs, each for the clients of its kind (in the order given:
/// librdkafka keeps the last value of a property set twice).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routed {
    /// For consumers: properties of scope C and *.
    pub consumer: Vec<(String, String)>,
    /// For producers (and admin clients): properties of scope P and *.
    pub producer: Vec<(String, String)>,
}

/// Splits `props` by scope. A property librdkafka does not list (a hidden one it still accepts)
/// goes to both; [`check`] has refused unknown ones before.
pub fn route(props: &[(String, String)]) -> Routed {
    let c = catalogue();
    let mut out = Routed::default();
    for (k, v) in props {
        let scope = c.scope(k).unwrap_or(Scope::Both);
        if scope.consumer() {
            out.consumer.push((k.clone(), v.clone()));
        }
        if scope.producer() {
            out.producer.push((k.clone(), v.clone()));
        }
    }
    out
}

/// Whether librdkafka takes `key=value`: a property it knows, with a value it accepts (its type
/// and range). The error names the property, with librdkafka's reason, and never the value.
pub fn check(key: &str, value: &str) -> Result<(), String> {
    match ClientConfig::new().set(key, value).create_native_config() {
        Ok(_) => Ok(()),
        Err(KafkaError::ClientConfig(RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN, ..)) => Err(format!(
            "--kafka-property {key}: librdkafka {} has no such property (its CONFIGURATION.md lists them)",
            rdkafka::util::get_rdkafka_version().1
        )),
        Err(KafkaError::ClientConfig(_, reason, ..)) => Err(format!(
            "--kafka-property {key}: librdkafka refuses the value: {}",
            redact(reason.trim(), value)
        )),
        Err(e) => Err(format!("--kafka-property {key}: {}", redact(&e.to_string(), value))),
    }
}

/// `reason` without `value` in it (librdkafka quotes the value it refuses), unless the value is a
/// plain number, which is no secret and says what was wrong ("value 0 is outside allowed range").
fn redact(reason: &str, value: &str) -> String {
    if value.is_empty() || value.parse::<f64>().is_ok() {
        reason.to_owned()
    } else {
        reason.replace(value, "…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn librdkafkas_own_table_gives_scopes_and_aliases() {
        let c = catalogue();
        assert!(c.len() > 150, "{} properties", c.len());
        assert_eq!(c.scope("fetch.wait.max.ms"), Some(Scope::Consumer));
        assert_eq!(c.scope("session.timeout.ms"), Some(Scope::Consumer));
        assert_eq!(
            c.scope("auto.offset.reset"),
            Some(Scope::Consumer),
            "a topic property"
        );
        assert_eq!(c.scope("linger.ms"), Some(Scope::Producer));
        assert_eq!(c.scope("acks"), Some(Scope::Producer), "a topic property");
        assert_eq!(c.scope("transaction.timeout.ms"), Some(Scope::Producer));
        assert_eq!(c.scope("security.protocol"), Some(Scope::Both));
        assert_eq!(c.scope("statistics.interval.ms"), Some(Scope::Both));
        assert_eq!(c.scope("no.such.property"), None);
        assert_eq!(c.canonical("bootstrap.servers"), "metadata.broker.list");
        assert!(c.same("metadata.broker.list", "bootstrap.servers"));
        assert!(c.same("linger.ms", "queue.buffering.max.ms"));
        // The global enable.auto.commit, not the legacy topic property of the same name.
        assert_eq!(c.canonical("enable.auto.commit"), "enable.auto.commit");
        assert!(!c.same("enable.auto.commit", "enable.auto.offset.store"));
    }

    #[test]
    fn parses_the_table_format() {
        let table = "## Global configuration properties\n\n\
            Property                                 | C/P | Range           |       Default | Importance | Description              \n\
            -----------------------------------------|-----|-----------------|--------------:|------------| --------------------------\n\
            builtin.features                         |  *  |                 | gzip, snappy  | low        | Indicates the builtin features. <br>*Type: CSV flags*\n\
            max.in.flight                            |  *  | 1 .. 1000000    |       1000000 | low        | Alias for `max.in.flight.requests.per.connection`: Maximum number. <br>*Type: integer*\n\
            a.very.long.property.name.that.overflows.its.column |  C  |  |  | low | x | y\n\n\
            ## Topic configuration properties\n\n\
            acks                                     |  P  | -1 .. 1000      |            -1 | high       | Alias for `request.required.acks`: acks. <br>*Type: integer*\n\
            builtin.features                         |  C  |                 |               | low        | Alias for `other`: x\n\n\
            ### C/P legend: C = Consumer, P = Producer, * = both\n";
        let c = Catalogue::parse(table);
        assert_eq!(c.len(), 4);
        assert_eq!(c.scope("max.in.flight"), Some(Scope::Both));
        assert_eq!(
            c.canonical("max.in.flight"),
            "max.in.flight.requests.per.connection"
        );
        assert_eq!(
            c.scope("a.very.long.property.name.that.overflows.its.column"),
            Some(Scope::Consumer)
        );
        assert_eq!(c.canonical("acks"), "request.required.acks");
        // In both sections: the scopes add up, the global section's alias (none) stays.
        assert_eq!(c.scope("builtin.features"), Some(Scope::Both));
        assert_eq!(c.canonical("builtin.features"), "builtin.features");
        assert!(Catalogue::parse("").is_empty());
    }

    #[test]
    fn properties_go_to_the_clients_of_their_kind_in_order() {
        let p = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let routed = route(&[
            p("fetch.wait.max.ms", "10"),
            p("linger.ms", "2"),
            p("security.protocol", "SASL_SSL"),
            p("auto.offset.reset", "latest"),
            p("compression.type", "zstd"),
            p("fetch.wait.max.ms", "20"),
        ]);
        assert_eq!(
            routed.consumer,
            [
                p("fetch.wait.max.ms", "10"),
                p("security.protocol", "SASL_SSL"),
                p("auto.offset.reset", "latest"),
                p("fetch.wait.max.ms", "20"),
            ]
        );
        assert_eq!(
            routed.producer,
            [
                p("linger.ms", "2"),
                p("security.protocol", "SASL_SSL"),
                p("compression.type", "zstd"),
            ]
        );
    }

    #[test]
    fn unknown_properties_and_refused_values_name_the_property_not_the_value() {
        check("fetch.wait.max.ms", "100").unwrap();
        check("sasl.password", "anything goes").unwrap();
        check("enable.sparse.connections", "true").expect("hidden, but librdkafka takes it");
        let e = check("sasl.pasword", "hunter2").unwrap_err();
        assert!(
            e.contains("sasl.pasword") && e.contains("no such property") && !e.contains("hunter2"),
            "{e}"
        );
        let e = check("security.protocol", "hunter2-plaintext").unwrap_err();
        assert!(
            e.contains("security.protocol") && e.contains("refuses") && !e.contains("hunter2"),
            "{e}"
        );
        let e = check("fetch.wait.max.ms", "-5").unwrap_err();
        assert!(e.contains("fetch.wait.max.ms") && e.contains("-5"), "{e}");
        assert!(check("enable.partition.eof", "maybe").is_err());
    }
}
