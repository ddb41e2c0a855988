//! [`Policy`]: the compiled rules, and the decisions taken from them.

use super::decision::Froms;
use super::index::FixedMap;
use super::*;
use crate::catalog::N_OPTS;
use crate::plan::VariantOps;
use index::RemoteIndex;

/// The compiled policy. Immutable after construction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub(super) rules: Vec<Rule>,
    pub on_error: OnError,
    /// Union of the slots any rule sets: a program's setsockopt for any other option is
    /// passed through without a look-up.
    managed: u32,
    /// Whether any rule needs a remote address; if none does, client decisions can be
    /// taken before connect without it.
    any_needs_remote: bool,
    /// Whether some rule that names a destination could apply to UDP: such rules reach only
    /// connected UDP sockets, which the library says once.
    udp_dest_rules: bool,
    /// Whether any rule matches on the local port (else accept() need not ask for it).
    any_local_port: bool,
    /// Per rule: the slots it sets.
    masks: Vec<u32>,
    /// Per rule: the slots it sets softly.
    soft_masks: Vec<u32>,
    pub(super) index: RemoteIndex,
    /// The rules with connect actions (deny, redirect, delay, fail), in order: the only ones
    /// a connect looks at for them, and none in most policies.
    action_rules: Vec<u32>,
    /// Some rule (or exception) names host patterns: the library records resolved names.
    any_host: bool,
    /// The plan entries of every distinct (option, value) the rules set, for the three
    /// kinds of socket ([`crate::plan::Variant`]): computed once here, so a plan is a few
    /// copies and applying it the `setsockopt` calls, nothing else.
    pub(super) plans: Vec<VariantOps>,
    /// Per rule and slot: the index in `plans` of what the rule sets there.
    pub(super) plan_of: Vec<[u32; N_OPTS]>,
    /// When no rule looks at addresses or ports, a decision depends only on the transport
    /// and the role: all six are taken here, once, and `decide` is a copy.
    fixed: Option<Box<[Fixed; 6]>>,
    /// For the precomputed decisions: each one's plan per stage and variant, made at the
    /// first socket of that decision (see [`crate::plan::FixedPlans`]).
    pub(crate) fixed_plans: crate::plan::FixedPlans,
}

/// A decision without its policy reference, for [`Policy::fixed`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Fixed {
    from: [u32; N_OPTS],
    mask: u32,
    soft: u32,
}

/// The socket a precomputed decision is for: the inverse of [`fixed_index`].
pub(crate) fn fixed_slot(i: usize) -> (Transport, Option<Role>) {
    let t = if i < 3 {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    (t, [None, Some(Role::Client), Some(Role::Server)][i % 3])
}

fn fixed_index(t: Transport, role: Option<Role>) -> usize {
    let t = match t {
        Transport::Tcp => 0,
        Transport::Udp => 3,
    };
    t + match role {
        None => 0,
        Some(Role::Client) => 1,
        Some(Role::Server) => 2,
    }
}

impl Policy {
    pub fn new(rules: Vec<Rule>, on_error: OnError) -> Policy {
        // Rules that set nothing are dropped.
        let rules: Vec<Rule> = if rules.iter().any(Rule::is_empty) {
            rules.into_iter().filter(|r| !r.is_empty()).collect()
        } else {
            rules
        };
        let any_needs_remote = rules.iter().any(|r| r.matcher.needs_remote());
        let udp_dest_rules = rules
            .iter()
            .any(|r| r.matcher.needs_remote() && r.matcher.transport != Some(Transport::Tcp));
        let any_local_port = rules.iter().any(|r| r.matcher.uses_local_port());
        let any_host = rules.iter().any(|r| r.matcher.uses_host());
        let action_rules = (0..rules.len() as u32)
            .filter(|&i| !rules[i as usize].actions.is_empty())
            .collect();
        let index = RemoteIndex::build(&rules);
        // One pass over every rule's slots: the masks, and the kernel operations of each
        // distinct (option, value), computed once.
        let mut managed = 0;
        let mut masks = Vec::with_capacity(rules.len());
        let mut soft_masks = Vec::with_capacity(rules.len());
        let settings: usize = rules.iter().map(|r| r.settings.len()).sum();
        let mut plans: Vec<VariantOps> = Vec::with_capacity(settings.min(64));
        let mut seen: FixedMap<(Opt, Value), u32> = Default::default();
        let mut plan_of = Vec::with_capacity(rules.len());
        for r in &rules {
            let (mut mask, mut soft) = (0u32, 0u32);
            let mut ids = [0u32; N_OPTS];
            for (o, st) in r.settings.iter() {
                let slot = o as usize;
                mask |= o.bit();
                if st.soft {
                    soft |= o.bit();
                }
                ids[slot] = *seen.entry((o, st.value)).or_insert_with(|| {
                    plans.push(VariantOps::new(o, st.value));
                    plans.len() as u32 - 1
                });
            }
            managed |= mask;
            masks.push(mask);
            soft_masks.push(soft);
            plan_of.push(ids);
        }
        let mut p = Policy {
            rules,
            on_error,
            managed,
            any_needs_remote,
            udp_dest_rules,
            any_local_port,
            masks,
            soft_masks,
            index,
            action_rules,
            any_host,
            plans,
            plan_of,
            fixed: None,
            fixed_plans: Default::default(),
        };
        if !p.any_needs_remote && !p.any_local_port {
            let mut fixed = Box::new([Fixed::default(); 6]);
            for t in [Transport::Tcp, Transport::Udp] {
                for role in [None, Some(Role::Client), Some(Role::Server)] {
                    let d = p.decide_scan(&Ctx {
                        role,
                        ..Ctx::new(t)
                    });
                    fixed[fixed_index(t, role)] = Fixed {
                        from: *d.from.get(),
                        mask: d.mask,
                        soft: d.soft,
                    };
                }
            }
            p.fixed = Some(fixed);
            p.fixed_plans = crate::plan::FixedPlans::reserve(&p);
        }
        p
    }

    /// Keeps only the rules that apply to a program called by one of `names` (argv[0]'s
    /// basename, the executable's basename...). Run once at load.
    pub fn for_program(&self, names: &[&str]) -> Policy {
        self.for_program_with_origins(names).0
    }

    /// [`Policy::for_program`], and for each rule kept, its index in this policy (so that
    /// `explain --program` numbers rules as the file does).
    pub fn for_program_with_origins(&self, names: &[&str]) -> (Policy, Vec<usize>) {
        let (origins, rules): (Vec<usize>, Vec<Rule>) = self
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.matcher.program.is_empty()
                    || r.matcher
                        .program
                        .iter()
                        .any(|p| names.contains(&p.as_str()))
            })
            .filter_map(|(i, r)| {
                let mut r = r.clone();
                r.matcher.program.clear();
                // An exception by program is settled here too: for this program it is the
                // rest of the exception, for others it never holds.
                if let Some(e) = r.matcher.except.as_mut() {
                    if !e.program.is_empty() {
                        if e.program.iter().any(|p| names.contains(&p.as_str())) {
                            e.program.clear();
                            if e.is_any() {
                                return None; // excepted entirely
                            }
                        } else {
                            r.matcher.except = None;
                        }
                    }
                }
                Some((i, r))
            })
            .unzip();
        (Policy::new(rules, self.on_error), origins)
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
    pub fn manages(&self, opt: Opt) -> bool {
        self.managed & opt.bit() != 0
    }
    pub fn managed_mask(&self) -> u32 {
        self.managed
    }
    pub fn any_local_port(&self) -> bool {
        self.any_local_port
    }
    pub fn udp_dest_rules(&self) -> bool {
        self.udp_dest_rules
    }
    pub fn any_needs_remote(&self) -> bool {
        self.any_needs_remote
    }
    /// Whether some rule has connect actions (deny, redirect, delay, fail).
    pub fn any_actions(&self) -> bool {
        !self.action_rules.is_empty()
    }
    /// Whether some rule redirects (then `getpeername` may have to answer for it).
    pub fn any_redirect(&self) -> bool {
        self.action_rules
            .iter()
            .any(|&i| self.rules[i as usize].actions.redirect.is_some())
    }
    /// Whether some rule looks at host names (then the names a program resolves matter).
    pub fn any_host(&self) -> bool {
        self.any_host
    }

    /// The actions a connect in `ctx` gets: for each kind, the last matching rule's.
    pub fn connect_actions(&self, ctx: &Ctx) -> ConnectActions {
        let mut out = ConnectActions::default();
        for &i in &self.action_rules {
            let r = &self.rules[i as usize];
            if r.matcher.matches(ctx) {
                out.actions.overlay(&r.actions);
                if r.actions.fail.is_some() {
                    out.fail_rule = i;
                }
            }
        }
        out
    }

    /// Like [`Policy::connect_actions`], naming the rule of each action (for `explain`).
    pub fn explain_actions(&self, ctx: &Ctx) -> Vec<(&'static str, String, &str)> {
        let mut out: [Option<(String, &str)>; 4] = Default::default();
        for &i in &self.action_rules {
            let r = &self.rules[i as usize];
            if !r.matcher.matches(ctx) {
                continue;
            }
            for (slot, text) in out.iter_mut().zip(r.actions.texts()) {
                if let Some(t) = text {
                    *slot = Some((t, r.name.as_str()));
                }
            }
        }
        ACTION_KINDS
            .into_iter()
            .zip(out)
            .filter_map(|(k, v)| v.map(|(s, n)| (k, s, n)))
            .collect()
    }

    /// Every rule that matches `ctx`, in policy order, with what it sets and, for each
    /// option and action, the later matching rule that overrides it (the last match wins):
    /// the whole decision, for `explain`.
    pub fn matched_rules(&self, ctx: &Ctx) -> Vec<MatchedRule<'_>> {
        let matching: Vec<usize> = (0..self.rules.len())
            .filter(|&i| self.rules[i].matcher.matches(ctx))
            .collect();
        let mut opt_winner = [usize::MAX; N_OPTS];
        let mut act_winner = [usize::MAX; 4];
        for &i in &matching {
            let r = &self.rules[i];
            for (o, _) in r.settings.iter() {
                opt_winner[o as usize] = i;
            }
            for (w, t) in act_winner.iter_mut().zip(r.actions.texts()) {
                if t.is_some() {
                    *w = i;
                }
            }
        }
        let by = |w: usize, i: usize| (w != i).then(|| self.rules[w].name.as_str());
        matching
            .into_iter()
            .map(|i| {
                let rule = &self.rules[i];
                MatchedRule {
                    index: i,
                    rule,
                    options: rule
                        .settings
                        .iter()
                        .map(|(o, s)| (o, *s, by(opt_winner[o as usize], i)))
                        .collect(),
                    actions: ACTION_KINDS
                        .into_iter()
                        .zip(rule.actions.texts())
                        .zip(act_winner)
                        .filter_map(|((k, t), w)| t.map(|t| (k, t, by(w, i))))
                        .collect(),
                }
            })
            .collect()
    }

    /// The options a socket in `ctx` gets. Later rules override earlier ones per option.
    pub fn decide(&self, ctx: &Ctx) -> Decision<'_> {
        match self.fixed_decision(fixed_index(ctx.transport, ctx.role)) {
            Some((d, _)) => d,
            None => self.decide_scan(ctx),
        }
    }

    /// Precomputed decision `i` (0..6) and the transport it is for, when the policy has
    /// them (no rule looks at addresses or ports).
    pub fn fixed_decision(&self, i: usize) -> Option<(Decision<'_>, Transport)> {
        let x = self.fixed.as_deref()?.get(i)?;
        let (t, _) = fixed_slot(i);
        Some((
            Decision {
                from: Froms::Fixed(&x.from),
                mask: x.mask,
                soft: x.soft,
                fixed: i as u8 + 1,
                policy: self,
            },
            t,
        ))
    }

    /// [`Policy::decide`] without the precomputed decisions: every candidate rule is
    /// matched (for tests that compare the two paths).
    pub fn decide_by_scan(&self, ctx: &Ctx) -> Decision<'_> {
        self.decide_scan(ctx)
    }

    /// [`Policy::decide`] the long way: every candidate rule is matched.
    fn decide_scan(&self, ctx: &Ctx) -> Decision<'_> {
        let mut d = Decision::empty(self);
        let mut consider = |i: u32| {
            let i = i as usize;
            if let (Some(r), Some(m), Some(sm)) =
                (self.rules.get(i), self.masks.get(i), self.soft_masks.get(i))
            {
                if r.matcher.matches(ctx) {
                    d.take(i, *m, *sm);
                }
            }
        };
        for &i in &self.index.always {
            consider(i);
        }
        if let Some((ip, _)) = ctx.remote {
            for (mask, table) in &self.index.by_prefix {
                if let Some(list) = table.get(&(ip & mask)) {
                    for &i in list {
                        consider(i);
                    }
                }
            }
        }
        d
    }

    /// Like [`Policy::decide`], but also names the rule that set each option (for `explain`).
    pub fn explain(&self, ctx: &Ctx) -> Vec<(Opt, Setting, &str)> {
        let mut out: [Option<(Setting, &str)>; N_OPTS] = [None; N_OPTS];
        for r in &self.rules {
            if r.matcher.matches(ctx) {
                for (o, s) in r.settings.iter() {
                    out[o as usize] = Some((*s, r.name.as_str()));
                }
            }
        }
        Opt::ALL
            .into_iter()
            .filter_map(|o| out[o as usize].map(|(s, n)| (o, s, n)))
            .collect()
    }
}
