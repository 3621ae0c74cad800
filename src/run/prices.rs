//! What model answers cost: USD per million input and output tokens by
//! model, from `AGENT_MODEL_PRICES` over built-in prices for the default
//! models (contract section 11). A model without a price costs nothing and
//! counts against a run's token budget only.

use std::collections::HashMap;

use serde::Deserialize;

use crate::domain::Usage;

/// One model's price in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

/// Prices by model name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Prices(HashMap<String, Price>);

/// The providers' list prices of the default models (contract section 2),
/// as published when this was written; `AGENT_MODEL_PRICES` overrides them.
const BUILT_IN: &[(&str, Price)] = &[
    (
        "claude-sonnet-4-20250514",
        Price {
            input_per_mtok: 3.0,
            output_per_mtok: 15.0,
        },
    ),
    (
        "gpt-4o-mini",
        Price {
            input_per_mtok: 0.15,
            output_per_mtok: 0.60,
        },
    ),
];

impl Prices {
    /// The built-in prices with `json` (the setting's value, if any) over
    /// them; the error says what is wrong with it.
    pub fn parse(json: Option<&str>) -> Result<Prices, String> {
        let mut prices: HashMap<String, Price> = BUILT_IN
            .iter()
            .map(|(model, price)| (model.to_string(), *price))
            .collect();
        if let Some(json) = json {
            let given: HashMap<String, Price> = serde_json::from_str(json).map_err(|e| {
                format!(
                    "must be a JSON object of model → {{\"input_per_mtok\", \"output_per_mtok\"}}: {e}"
                )
            })?;
            for (model, price) in given {
                let valid = |p: f64| p.is_finite() && p >= 0.0;
                if model.is_empty() || !valid(price.input_per_mtok) || !valid(price.output_per_mtok)
                {
                    return Err(format!(
                        "the price of `{model}` must name a model and give prices of 0 or more"
                    ));
                }
                prices.insert(model, price);
            }
        }
        Ok(Prices(prices))
    }

    /// The price of `model`: its own, or that of the longest priced name it
    /// starts with (providers answer with dated names, `gpt-4o-mini-2024-07-18`
    /// for `gpt-4o-mini`).
    pub fn price(&self, model: &str) -> Option<Price> {
        if let Some(price) = self.0.get(model) {
            return Some(*price);
        }
        self.0
            .iter()
            .filter(|(name, _)| model.starts_with(name.as_str()))
            .max_by_key(|(name, _)| name.len())
            .map(|(_, price)| *price)
    }

    /// What `usage` cost with the first of `models` that has a price.
    pub fn cost(&self, models: &[&str], usage: Usage) -> Option<f64> {
        let price = models.iter().find_map(|m| self.price(m))?;
        Some(
            (usage.input_tokens as f64 * price.input_per_mtok
                + usage.output_tokens as f64 * price.output_per_mtok)
                / 1_000_000.0,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_prices_dated_names_and_overrides() {
        let prices = Prices::parse(None).unwrap();
        let usage = Usage {
            input_tokens: 1_000_000,
            output_tokens: 100_000,
        };
        assert_eq!(prices.cost(&["claude-sonnet-4-20250514"], usage), Some(4.5));
        let dated = prices.cost(&["gpt-4o-mini-2024-07-18"], usage).unwrap();
        assert!((dated - 0.21).abs() < 1e-12);
        assert_eq!(prices.cost(&["scripted"], usage), None);
        // The answer's model first, then the requested one.
        assert_eq!(
            prices.cost(&["odd", "gpt-4o-mini"], usage),
            prices.cost(&["gpt-4o-mini"], usage)
        );

        let prices = Prices::parse(Some(
            r#"{"mock-model": {"input_per_mtok": 10, "output_per_mtok": 20}, "gpt-4o-mini": {"input_per_mtok": 1, "output_per_mtok": 1}}"#,
        ))
        .unwrap();
        assert_eq!(prices.cost(&["mock-model"], usage), Some(12.0));
        assert_eq!(prices.cost(&["gpt-4o-mini"], usage), Some(1.1));
    }

    #[test]
    fn bad_prices_are_refused_with_a_reason() {
        for bad in [
            "[]",
            "{\"m\": 3}",
            "{\"m\": {\"input_per_mtok\": -1, \"output_per_mtok\": 1}}",
            "{\"m\": {\"input_per_mtok\": 1}}",
            "{\"m\": {\"input_per_mtok\": 1, \"output_per_mtok\": 1, \"x\": 2}}",
            "{\"\": {\"input_per_mtok\": 1, \"output_per_mtok\": 1}}",
        ] {
            assert!(Prices::parse(Some(bad)).is_err(), "{bad}");
        }
    }
}
