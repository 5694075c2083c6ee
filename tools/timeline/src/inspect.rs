//! Reads a rendered timeline page back, for tests and the QEMU scenario that checks the
//! timeline of a real failover. The page is well-formed XML by construction, so a strict
//! XML parser doubles as the "it parses" check.

use roxmltree::{Document, Node, ParsingOptions};

/// A failover annotation as the page shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct ShownFailover {
    pub service: String,
    pub slot: u64,
    pub from: String,
    pub to: String,
    pub ms: f64,
}

/// What a page holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Inspection {
    /// Node names of the overview's lanes, top to bottom, with their number of boots.
    pub lanes: Vec<(String, u32)>,
    /// The overview's failover annotations.
    pub failovers: Vec<ShownFailover>,
    /// SVG panels (the overview plus one per failover).
    pub panels: usize,
    /// Hover titles in the overview.
    pub titles: usize,
}

fn has_class(node: &Node, class: &str) -> bool {
    node.attribute("class")
        .is_some_and(|c| c.split_whitespace().any(|w| w == class))
}

/// Parses a page; any XML error or a missing overview is an `Err` saying what.
pub fn inspect(html: &str) -> Result<Inspection, String> {
    let options = ParsingOptions {
        allow_dtd: true,
        ..ParsingOptions::default()
    };
    let doc = Document::parse_with_options(html, options)
        .map_err(|e| format!("the timeline is not well-formed: {e}"))?;
    let panels = doc
        .descendants()
        .filter(|n| n.has_tag_name("svg") && has_class(n, "timeline"))
        .count();
    let overview = doc
        .descendants()
        .find(|n| n.has_tag_name("svg") && n.attribute("id") == Some("overview"))
        .ok_or("the timeline has no overview panel")?;
    let lanes = overview
        .descendants()
        .filter(|n| n.has_tag_name("g") && has_class(n, "lane"))
        .map(|n| {
            (
                n.attribute("data-node").unwrap_or("").to_string(),
                n.attribute("data-boots")
                    .and_then(|b| b.parse().ok())
                    .unwrap_or(0),
            )
        })
        .collect();
    let mut failovers = Vec::new();
    for n in overview
        .descendants()
        .filter(|n| n.has_tag_name("g") && has_class(n, "failover"))
    {
        let attr = |name: &str| {
            n.attribute(name)
                .ok_or_else(|| format!("failover annotation without {name}"))
        };
        failovers.push(ShownFailover {
            service: attr("data-service")?.to_string(),
            slot: attr("data-slot")?
                .parse()
                .map_err(|_| "failover data-slot is not a number".to_string())?,
            from: attr("data-from")?.to_string(),
            to: attr("data-to")?.to_string(),
            ms: attr("data-ms")?
                .parse()
                .map_err(|_| "failover data-ms is not a number".to_string())?,
        });
    }
    let titles = overview
        .descendants()
        .filter(|n| n.has_tag_name("title"))
        .count();
    Ok(Inspection {
        lanes,
        failovers,
        panels,
        titles,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_pages_are_errors() {
        assert!(inspect("<html><body><p>unclosed</body></html>").is_err());
        assert!(inspect("<!DOCTYPE html>\n<html><body/></html>")
            .unwrap_err()
            .contains("no overview"));
    }
}
