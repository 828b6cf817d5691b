import numpy as np, sys
exec(open('/tmp/s14/exp/frontier2.py').read().split('def curve')[0])
def curve3(score,h,eps,save):
    n=h.shape[1]; T=h.shape[0]; rows=np.arange(T)[:,None]
    o=np.argsort(score,axis=1); h2=h**2; tot=h2.sum()
    pts=[]
    for s1 in np.arange(0.10,0.41,0.02):
        k1=int(round(s1*n))
        skip=np.zeros_like(h,dtype=bool); skip[rows,o[:,:k1]]=True
        e1=(h2*skip).sum()
        rest=np.sort(np.where(skip,np.inf,h2),axis=1)[:,:n-k1]
        cum=np.concatenate([[0],np.cumsum(rest.sum(0))])  # error skipping j smallest kept
        for k2 in range(k1, int(0.6*n), 16):
            j2=k2-k1
            for k3 in ([k2] if eps is None else range(k2, n, 32)):
                j3=k3-k1
                e=(e1+cum[j2]+ (0 if eps is None else eps*(cum[j3]-cum[j2])))/tot
                b=(k1*(UPB+DN)+(k2-k1)*DN + (0 if eps is None else (k3-k2)*DN*save))/(n*NB)
                pts.append((e,b))
    pts.sort(); best=-1; fr=[]
    for e,b in pts:
        if b>best: best=b; fr.append((e,b))
    return fr
def at(fr,E):
    ok=[b for e,b in fr if e<=E]; return max(ok) if ok else float("nan")
for L in sys.argv[1:]:
    Ac,Uc=load(f'/tmp/s14/exp/cal-L{L}.f32'); At,Ut=load(f'/tmp/s14/exp/gpl-L{L}.f32')
    Ac,Uc,At,Ut=Ac[1:],Uc[1:],At[1:],Ut[1:]
    ht=At*Ut; mu=np.abs(Uc).mean(0)
    sc=np.abs(At)*mu
    frs={'cascade':curve3(sc,ht,None,0),'q6 drop2 (e.009,30%)':curve3(sc,ht,0.009,0.30),
         'q4k drop1 (e.037,22%)':curve3(sc,ht,0.037,0.22),'q4k drop2 (e.15,43%)':curve3(sc,ht,0.15,0.43)}
    levels=[min(e for e,b in frs['cascade'] if b>=x) for x in (0.19,0.22,0.25)]
    for E in levels:
        print(f'L{L} err<={E:.4f}: '+'  '.join(f'{k} {100*at(f,E):.1f}%' for k,f in frs.items()), flush=True)
