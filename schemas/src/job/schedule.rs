//! Rundeck's `schedule` (and `timeZone`): parsed, checked and stored here,
//! exported as Rundeck exports it; they fire once the scheduler exists
//! (until then a job says `active: false` and its import warns).
//!
//! Read as Rundeck's `ScheduledExecution.fromMap` reads it: `crontab` (a
//! Quartz expression of 6 or 7 fields) wins; otherwise the structured form
//! (`time {hour, minute, seconds}`, `month`, `year`, and `dayofmonth {day}`
//! or `weekday {day}`), each part defaulted as Rundeck does. Written as
//! Rundeck writes it: always the structured form.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A job's schedule as Quartz's seven fields.
#[derive(Debug, Clone, PartialEq, Eq, JsonSchema)]
pub struct Schedule {
    pub seconds: String,
    pub minute: String,
    pub hour: String,
    /// `?` when the schedule names week days.
    pub day_of_month: String,
    pub month: String,
    /// `?` when the schedule names a day of the month.
    pub day_of_week: String,
    pub year: String,
}

impl Schedule {
    /// The Quartz expression, as Rundeck builds it to run the job.
    pub fn crontab(&self) -> String {
        [
            &self.seconds,
            &self.minute,
            &self.hour,
            &self.day_of_month,
            &self.month,
            &self.day_of_week,
            &self.year,
        ]
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ")
    }

    fn from_crontab(text: &str) -> Result<Self, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        if !(6..=7).contains(&fields.len()) {
            return Err(format!(
                "schedule crontab `{text}` has {} fields; a Quartz expression has 6 or 7 (seconds minute hour day-of-month month day-of-week [year])",
                fields.len()
            ));
        }
        let s = Schedule {
            seconds: fields[0].into(),
            minute: fields[1].into(),
            hour: fields[2].into(),
            day_of_month: fields[3].to_uppercase(),
            month: fields[4].to_uppercase(),
            day_of_week: fields[5].to_uppercase(),
            year: fields.get(6).copied().unwrap_or("*").into(),
        };
        s.checked()
    }

    fn checked(self) -> Result<Self, String> {
        for (name, v) in [
            ("seconds", &self.seconds),
            ("minute", &self.minute),
            ("hour", &self.hour),
            ("day of month", &self.day_of_month),
            ("month", &self.month),
            ("day of week", &self.day_of_week),
            ("year", &self.year),
        ] {
            let ok = !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "*?/,-#".contains(c));
            if !ok {
                return Err(format!("schedule {name} `{v}` is not a Quartz cron field"));
            }
        }
        // Quartz needs exactly one of the two day fields to be `?`.
        if (self.day_of_month == "?") == (self.day_of_week == "?") {
            return Err(format!(
                "schedule `{}`: exactly one of day of month (`{}`) and day of week (`{}`) must be `?`, as Quartz requires",
                self.crontab(),
                self.day_of_month,
                self.day_of_week
            ));
        }
        Ok(self)
    }
}

/// A scalar as Rundeck's Groovy reads it: text, or a number as text.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn field(map: &Map<String, Value>, key: &str, within: &str) -> Result<Option<String>, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => text(v)
            .map(Some)
            .ok_or_else(|| format!("schedule{within}.{key} must be text or a number")),
    }
}

impl TryFrom<Value> for Schedule {
    type Error = String;

    fn try_from(v: Value) -> Result<Self, String> {
        let Value::Object(map) = v else {
            return Err("schedule must be a map (`crontab`, or `time`, `month`, `year`, `weekday`/`dayofmonth`)".into());
        };
        for k in map.keys() {
            if !["crontab", "time", "month", "year", "weekday", "dayofmonth"].contains(&k.as_str())
            {
                return Err(format!(
                    "unknown field `{k}` in schedule, expected one of `crontab`, `time`, `month`, `year`, `weekday`, `dayofmonth`"
                ));
            }
        }
        if let Some(c) = field(&map, "crontab", "")?.filter(|c| !c.is_empty()) {
            return Schedule::from_crontab(&c);
        }
        let sub = |key: &str| -> Result<Map<String, Value>, String> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(Map::new()),
                Some(Value::Object(m)) => Ok(m.clone()),
                Some(_) => Err(format!("schedule.{key} must be a map")),
            }
        };
        let time = sub("time")?;
        let weekday = sub("weekday")?;
        let dayofmonth = sub("dayofmonth")?;
        for (name, m, keys) in [
            ("time", &time, &["hour", "minute", "seconds"][..]),
            ("weekday", &weekday, &["day"][..]),
            ("dayofmonth", &dayofmonth, &["day"][..]),
        ] {
            if let Some(k) = m.keys().find(|k| !keys.contains(&k.as_str())) {
                return Err(format!("unknown field `{k}` in schedule.{name}"));
            }
        }
        let dom = field(&dayofmonth, "day", ".dayofmonth")?.filter(|d| d != "?");
        let (day_of_month, day_of_week) = match dom {
            Some(d) => (d.to_uppercase(), "?".to_string()),
            None => (
                "?".to_string(),
                field(&weekday, "day", ".weekday")?
                    .unwrap_or_else(|| "*".into())
                    .to_uppercase(),
            ),
        };
        Schedule {
            seconds: field(&time, "seconds", ".time")?.unwrap_or_else(|| "0".into()),
            minute: field(&time, "minute", ".time")?.unwrap_or_else(|| "0".into()),
            hour: field(&time, "hour", ".time")?.unwrap_or_else(|| "0".into()),
            day_of_month,
            month: field(&map, "month", "")?
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "*".into())
                .to_uppercase(),
            day_of_week,
            year: field(&map, "year", "")?
                .filter(|y| !y.is_empty())
                .unwrap_or_else(|| "*".into()),
        }
        .checked()
    }
}

impl Serialize for Schedule {
    /// As Rundeck's `toMap` writes it: `time`, `month`, `year`, and
    /// `dayofmonth` when a day of the month is set, else `weekday`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Time<'a> {
            hour: &'a str,
            minute: &'a str,
            seconds: &'a str,
        }
        #[derive(Serialize)]
        struct Day<'a> {
            day: &'a str,
        }
        #[derive(Serialize)]
        struct Out<'a> {
            time: Time<'a>,
            month: &'a str,
            year: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            dayofmonth: Option<Day<'a>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            weekday: Option<Day<'a>>,
        }
        let on_day = self.day_of_month != "?";
        Out {
            time: Time {
                hour: &self.hour,
                minute: &self.minute,
                seconds: &self.seconds,
            },
            month: &self.month,
            year: &self.year,
            dayofmonth: on_day.then_some(Day {
                day: &self.day_of_month,
            }),
            weekday: (!on_day).then_some(Day {
                day: &self.day_of_week,
            }),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Schedule::try_from(Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_read_as_rundeck_reads_them() {
        let read = |yaml: &str| -> Result<String, String> {
            let v: Value = serde_yaml_ng::from_str(yaml).unwrap();
            Schedule::try_from(v).map(|s| s.crontab())
        };
        for (yaml, want) in [
            ("{crontab: '0 30 */6 ? * * *'}", Ok("0 30 */6 ? * * *")),
            ("{crontab: '0 0 12 ? jan mon'}", Ok("0 0 12 ? JAN MON *")),
            ("{time: {hour: '05', minute: '01'}, weekday: {day: 'MON,FRI'}}", Ok("0 01 05 ? * MON,FRI *")),
            ("{time: {hour: 8, minute: 5, seconds: 9}, month: 11, year: 2011, weekday: {day: 0}}", Ok("9 5 8 ? 11 0 2011")),
            ("{time: {hour: '0'}, dayofmonth: {day: '1'}, month: '*'}", Ok("0 0 0 1 * ? *")),
            ("{}", Ok("0 0 0 ? * * *")),
            ("{crontab: '0 0 12 * *'}", Err("has 5 fields")),
            ("{crontab: '0 0 12 * * MON'}", Err("exactly one of day of month")),
            ("{time: {hour: 'noon;'}}", Err("hour `noon;` is not a Quartz cron field")),
            ("{every: day}", Err("unknown field `every`")),
        ] {
            match (read(yaml), want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{yaml}"),
                (Err(g), Err(w)) => assert!(g.contains(w), "{yaml}: {g}"),
                (g, w) => panic!("{yaml}: got {g:?}, want {w:?}"),
            }
        }
    }
}
